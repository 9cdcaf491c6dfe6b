"""`celora db seed` against a real PostgreSQL: creates, then changes nothing; updates; broken files; production."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from celora_cli.data.seed.apply import seed
from celora_cli.errors import ConfigError, Refused
from tests.support import REPO, run_celora, settings_for

TABLES = ("users", "wallets", "transactions", "notifications")
EXPECTED = {"users": 2, "wallets": 4, "transactions": 8, "notifications": 6}


@pytest.fixture
def fixtures_dir(tmp_path) -> Path:
    """A private copy of the repo's fixtures, for tests that edit them."""
    copy = tmp_path / "fixtures"
    shutil.copytree(REPO / "fixtures", copy)
    return copy


def row_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def counts_of(result, kind: str) -> dict[str, int]:
    return {table: getattr(counts, kind) for table, counts in result.tables.items()}


def test_first_run_creates_everything_second_changes_nothing(migrated_db, fixtures_dir):
    settings = settings_for(migrated_db)
    first = seed(settings, fixtures_dir)
    assert counts_of(first, "created") == EXPECTED
    assert row_counts(migrated_db) == EXPECTED
    with psycopg.connect(migrated_db) as conn:
        before = conn.execute("SELECT max(updated_at) FROM users").fetchone()[0]
        wallets = conn.execute("SELECT u.email, w.chain::text, w.address, w.is_primary FROM wallets w "
                               "JOIN users u ON u.id = w.user_id ORDER BY 1, 2").fetchall()
    assert [(e, c, p) for e, c, _, p in wallets] == [
        ("alice@celora.io", "celo", True), ("alice@celora.io", "ethereum", False),
        ("bob@celora.io", "bitcoin", True), ("bob@celora.io", "solana", False)]
    assert wallets[0][2] == wallets[0][2].lower()  # the checksum-cased fixture is stored lowercase

    second = seed(settings, fixtures_dir)
    assert counts_of(second, "unchanged") == EXPECTED
    assert counts_of(second, "created") == counts_of(second, "updated") == dict.fromkeys(TABLES, 0)
    assert not second.changed
    assert row_counts(migrated_db) == EXPECTED
    with psycopg.connect(migrated_db) as conn:  # nothing was rewritten: the updated_at trigger never fired
        assert conn.execute("SELECT max(updated_at) FROM users").fetchone()[0] == before


def test_changed_fixture_value_is_reported_updated(migrated_db, fixtures_dir):
    settings = settings_for(migrated_db)
    seed(settings, fixtures_dir)
    wallets = fixtures_dir / "wallets.toml"
    wallets.write_text(wallets.read_text().replace('label = "Bob\'s savings"', 'label = "Bob cold storage"'))
    notifications = fixtures_dir / "notifications.toml"
    # Moving the "read" mark: read_at removed from one notification.
    notifications.write_text(notifications.read_text().replace("read_at = 2026-11-19T08:30:12Z\n", ""))
    result = seed(settings, fixtures_dir)
    assert result.tables["wallets"].updated == 1 and result.tables["wallets"].unchanged == 3
    assert result.tables["notifications"].updated == 1 and result.tables["notifications"].unchanged == 5
    assert result.tables["users"].unchanged == 2
    assert row_counts(migrated_db) == EXPECTED
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT label FROM wallets WHERE chain = 'bitcoin'").fetchone()[0] == "Bob cold storage"


def test_primary_wallet_can_move_to_another_wallet(migrated_db, fixtures_dir):
    settings = settings_for(migrated_db)
    seed(settings, fixtures_dir)
    wallets = fixtures_dir / "wallets.toml"
    text = wallets.read_text().replace('label = "Alice on Celo (Valora)"\nis_primary = true',
                                       'label = "Alice on Celo (Valora)"')
    wallets.write_text(text.replace('label = "Alice on Ethereum (MetaMask)"',
                                    'label = "Alice on Ethereum (MetaMask)"\nis_primary = true'))
    result = seed(settings, fixtures_dir)
    assert result.tables["wallets"].updated == 2


BROKEN = [
    ("users.toml", lambda t: t.replace('email_verified = true', 'email_verified = "yes"'),
     "users.toml: users[0].email_verified", "expected true or false"),
    ("users.toml", lambda t: t + "\n[[users]\n", "users.toml", "TOML syntax error"),
    ("wallets.toml", lambda t: t.replace('label = "Bob\'s savings"', 'lable = "Bob\'s savings"'),
     "wallets.toml: wallets[2].lable", "unknown field"),
    ("wallets.toml", lambda t: t.replace("0xdd532982fd2Da62aB60E411DD1f8ced9bc7ae732",
                                         "0xdd532982fd2Da62aB60E411DD1f8ced9bc7ae733"),
     "wallets.toml: wallets[1].address", "not a valid ethereum address"),
    ("wallets.toml", lambda t: t.replace("0x3DD5eaE815d5b824e0B56FC2A2D60a3997Fe9166",
                                         "0x3DD5eaE815d5b824e0B56FC2A2D60a3997Fe9167", 1),
     "wallets.toml: wallets[0].address", "EIP-55 checksum"),
    ("wallets.toml", lambda t: t.replace("bc1qd4gayzh3xzfmkjprc96y7etxqk5ftkwau0ekf7",
                                         "bc1qd4gayzh3xzfmkjprc96y7etxqk5ftkwau0ekf8"),
     "wallets.toml: wallets[2].address", "bech32 checksum"),
    ("wallets.toml", lambda t: t.replace('user = "bob@celora.io"\nchain = "solana"',
                                         'user = "carol@celora.io"\nchain = "solana"'),
     "wallets.toml: wallets[3].user", "no user 'carol@celora.io'"),
    # Every mention, so the transaction stays consistent with itself and only the reference is wrong.
    ("transactions.toml", lambda t: t.replace("HPLUuSo1NCVtPims6xbvPv2HtRK6Kvpboif3ZfwFNGkg",
                                              "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"),
     "transactions.toml: transactions[6].wallet", "no solana wallet"),
    ("notifications.toml", lambda t: t.replace('user = "bob@celora.io"\nkey = "received-btc"',
                                               'user = "bob@celora.io"\nkey = "verify-email"'),
     "notifications.toml: notifications[4].key", "already used by notifications[3]"),
]


@pytest.mark.parametrize(("file", "edit", "place", "problem"), BROKEN,
                         ids=[f"{b[0]}:{b[3]}" for b in BROKEN])
def test_broken_fixture_names_file_and_place_and_writes_nothing(migrated_db, fixtures_dir, file, edit, place,
                                                                problem):
    path = fixtures_dir / file
    path.write_text(edit(path.read_text()))
    with pytest.raises(ConfigError) as caught:
        seed(settings_for(migrated_db), fixtures_dir)
    assert place in caught.value.message and problem in caught.value.message
    assert row_counts(migrated_db) == dict.fromkeys(TABLES, 0)


def test_production_is_refused_and_nothing_written(migrated_db, fixtures_dir):
    with pytest.raises(Refused) as caught:
        seed(settings_for(migrated_db, CELORA_ENV="production"), fixtures_dir)
    assert "CELORA_ENV is 'production'" in caught.value.message
    assert "--allow-production" in caught.value.hint
    assert row_counts(migrated_db) == dict.fromkeys(TABLES, 0)
    # The loud override does seed.
    result = seed(settings_for(migrated_db, CELORA_ENV="production"), fixtures_dir, allow_production=True)
    assert counts_of(result, "created") == EXPECTED


def test_database_stamped_production_is_refused_whatever_celora_env_says(migrated_db, fixtures_dir):
    with psycopg.connect(migrated_db) as conn:
        conn.execute("UPDATE celora_metadata SET value = 'production' WHERE key = 'environment'")
    with pytest.raises(Refused) as caught:
        seed(settings_for(migrated_db, CELORA_ENV="development"), fixtures_dir)
    assert "stamped 'production'" in caught.value.message
    assert row_counts(migrated_db) == dict.fromkeys(TABLES, 0)


def test_cli_json_first_and_second_run(migrated_db):
    env = {"DATABASE_URL": migrated_db, "CELORA_ENV": "test"}
    fixtures = str(REPO / "fixtures")
    first = run_celora("db", "seed", "--fixtures", fixtures, "--json", env=env)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["ok"] is True and data["changed"] is True
    assert {t: c["created"] for t, c in data["tables"].items()} == EXPECTED
    second = run_celora("db", "seed", "--fixtures", fixtures, "--json", env=env)
    data = json.loads(second.stdout)
    assert second.returncode == 0 and data["changed"] is False
    assert {t: c["unchanged"] for t, c in data["tables"].items()} == EXPECTED
    human = run_celora("db", "seed", "--fixtures", fixtures, env=env)
    assert human.returncode == 0 and "nothing changed" in human.stdout


def test_cli_production_refused_exit_12(migrated_db):
    result = run_celora("db", "seed", "--fixtures", str(REPO / "fixtures"), "--json",
                        env={"DATABASE_URL": migrated_db, "CELORA_ENV": "production"})
    assert result.returncode == 12
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "Refused" and "--allow-production" in error["hint"]
    assert row_counts(migrated_db) == dict.fromkeys(TABLES, 0)


def test_cli_broken_fixture_exit_3_names_place(migrated_db, fixtures_dir):
    path = fixtures_dir / "transactions.toml"
    path.write_text(path.read_text().replace("decimals = 6", "decimals = 6.5"))
    result = run_celora("db", "seed", "--fixtures", str(fixtures_dir),
                        env={"DATABASE_URL": migrated_db, "CELORA_ENV": "test"})
    assert result.returncode == 3
    assert "transactions.toml: transactions[2].decimals" in result.stderr
    assert "Traceback" not in result.stderr
    assert row_counts(migrated_db) == dict.fromkeys(TABLES, 0)


def test_cli_volume_after_fixtures(migrated_db):
    env = {"DATABASE_URL": migrated_db, "CELORA_ENV": "test"}
    result = run_celora("db", "seed", "--fixtures", str(REPO / "fixtures"), "--users", "3", "--seed", "11", "--json",
                        env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    volume = data["volume"]
    assert volume["users"] == 3
    counts = row_counts(migrated_db)
    assert counts == {table: EXPECTED[table] + volume[table] for table in TABLES}
    # Fixtures again, no volume: the generated rows are not fixtures and stay as they are.
    again = json.loads(run_celora("db", "seed", "--fixtures", str(REPO / "fixtures"), "--json", env=env).stdout)
    assert again["changed"] is False and again["volume"] is None
    assert row_counts(migrated_db) == counts
    human = run_celora("db", "seed", "--fixtures", str(REPO / "fixtures"), "--users", "2", "--seed", "12", env=env)
    assert human.returncode == 0, human.stderr
    assert "Generated volume: users 2," in human.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_quickstart_seeds_between_migrations_and_health(tmp_path):
    import subprocess

    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", ".installed"):
        (venv / ("bin" if name == "python" else "") / name).touch()
    result = subprocess.run(["make", "-n", "-C", str(REPO), f"VENV={venv}", "UV=", "quickstart"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    steps = [line.split("/bin/celora ")[1] for line in result.stdout.splitlines() if "/bin/celora " in line]
    assert steps == ["db migrate-deploy", "db seed", "db health"]


def test_unmigrated_database_is_schema_error_exit_7(empty_db):
    result = run_celora("db", "seed", "--fixtures", str(REPO / "fixtures"), "--json",
                        env={"DATABASE_URL": empty_db, "CELORA_ENV": "test"})
    assert result.returncode == 7, result.stderr
    assert json.loads(result.stdout)["error"]["type"] == "SchemaNotMigrated"


def test_cli_broken_fixture_json_error_object(migrated_db, fixtures_dir):
    path = fixtures_dir / "users.toml"
    path.write_text(path.read_text().replace('email = "bob@celora.io"', 'email = "bob"'))
    result = run_celora("db", "seed", "--fixtures", str(fixtures_dir), "--json",
                        env={"DATABASE_URL": migrated_db, "CELORA_ENV": "test"})
    assert result.returncode == 3
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ConfigError" and "users.toml: users[1].email" in error["message"]


def test_seed_flag_without_users_is_a_usage_error():
    result = run_celora("db", "seed", "--seed", "7", "--json", env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    assert result.returncode == 64
    assert "--users" in json.loads(result.stdout)["error"]["hint"]



def test_a_second_seed_waits_for_the_first_instead_of_duplicating(migrated_db, fixtures_dir):
    """Two seeds at once: the second waits on the seed's advisory lock, then finds every row the first wrote.
    Without the lock it would insert alongside the first (a unique violation on users; duplicate notifications,
    which have no unique index)."""
    import os
    import subprocess
    import sys
    import time

    from celora_cli.data.seed.apply import SEED_LOCK_SQL, apply_fixtures
    from celora_cli.data.seed.fixtures import load_fixtures
    from tests.support import TEST_PROJECT

    env = {k: v for k, v in os.environ.items() if not k.startswith("CELORA_") and k != "DATABASE_URL"}
    env.update(DATABASE_URL=migrated_db, CELORA_ENV="test", CELORA_PROJECT_ROOT=str(TEST_PROJECT),
               PYTHONPATH=str(REPO), NO_COLOR="1")
    with psycopg.connect(migrated_db) as first, psycopg.connect(migrated_db, autocommit=True) as watcher:
        first.execute(SEED_LOCK_SQL)  # the first seed, mid-transaction
        apply_fixtures(first, load_fixtures(fixtures_dir))
        second = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "seed", "--fixtures", str(fixtures_dir),
                                   "--json"], env=env, cwd=TEST_PROJECT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        try:
            deadline = time.monotonic() + 60  # a guard against hanging, not a timing assert
            while not watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'celora db seed' "
                    "AND wait_event_type = 'Lock' AND wait_event = 'advisory'").fetchone()[0]:
                assert second.poll() is None, second.communicate()
                assert time.monotonic() < deadline, "the second seed never waited on the seed lock"
                time.sleep(0.05)
            first.commit()
            out, err = second.communicate(timeout=60)
        finally:
            if second.poll() is None:
                second.kill()
    assert second.returncode == 0, err
    data = json.loads(out)
    assert {t: c["unchanged"] for t, c in data["tables"].items()} == EXPECTED
    assert row_counts(migrated_db) == EXPECTED


def test_volume_refused_for_a_loaded_seed_writes_nothing_at_all(migrated_db):
    env = {"DATABASE_URL": migrated_db, "CELORA_ENV": "test"}
    args = ("db", "seed", "--fixtures", str(REPO / "fixtures"), "--users", "2", "--seed", "5", "--json")
    assert run_celora(*args, env=env).returncode == 0
    with psycopg.connect(migrated_db) as conn:  # a fixture edited in the database meanwhile
        conn.execute("UPDATE wallets SET label = 'edited' WHERE chain = 'solana'")
    before = row_counts(migrated_db)
    again = run_celora(*args, env=env)
    assert again.returncode == 12 and "already loaded" in json.loads(again.stdout)["error"]["message"]
    assert row_counts(migrated_db) == before
    with psycopg.connect(migrated_db) as conn:  # the fixtures' repair was rolled back with the volume
        assert conn.execute("SELECT label FROM wallets WHERE chain = 'solana'").fetchone()[0] == "edited"
