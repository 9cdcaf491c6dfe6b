"""The bad-input matrix: one table of what users get wrong, each row run through the real `celora` process.

Every row asserts the documented exit code, a message fragment that names the cause, no traceback, no
"Unexpected error", no password (neither as typed nor percent-encoded) and no change to the database.

The rows that need a server use a throwaway cluster of their own whose `app` role has a real password
(scram-sha-256 on TCP), so a wrong password is really refused and a right one really travels through celora.
All rows run at once (separate processes) in a module fixture, between one catalog snapshot before and one
after; each row is then its own test.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.support import REPO, TEST_PROJECT, free_port, run_celora, shared_tmpdir
from tests.support.cluster import throwaway_cluster

pytestmark = pytest.mark.db  # some tests start a PostgreSQL of their own, outside the session's fixtures

PASSWORD = "S3cr3t/p@ss#word"
ENCODED = quote(PASSWORD, safe="")  # S3cr3t%2Fp%40ss%23word
SECRETS = (PASSWORD, ENCODED, ENCODED.lower(), "p@ss#word")
DATABASE = "matrix"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    env: dict[str, str]
    code: int
    fragment: str  # in stdout + stderr (case-insensitive)

    def param(self):
        return pytest.param(self, id=self.id)


def case(id: str, args: str | tuple[str, ...], env: dict[str, str] | None, code: int, fragment: str) -> Case:
    return Case(id, tuple(args.split()) if isinstance(args, str) else args, env or {}, code, fragment)


# Placeholders filled in by the `results` fixture: {app} is the app role's URL with the right password,
# {host} the server's host:port, {tmp} a folder of broken files, {refused} a port nothing listens on, {taken}
# one something listens on.
APP = {"DATABASE_URL": "{app}"}
MIGRATE = {**APP, "CELORA_MIGRATIONS_DIR": "{tmp}/migrations_copy"}  # a copy: a row must never write into the repo
CASES = [
    # -- malformed and unsupported URLs (no server needed) -------------------------------------------------
    case("mysql-url", "db status", {"DATABASE_URL": f"mysql://app:{ENCODED}@127.0.0.1/{DATABASE}"}, 3,
         "unsupported scheme 'mysql'"),
    case("garbage-url", "db status", {"DATABASE_URL": "definitely not a url"}, 3, "DATABASE_URL"),
    # No host means libpq's default unix socket, which this machine does not have: unreachable, not malformed,
    # and the message names the socket, not a TCP localhost:5432 that was never tried.
    case("url-without-host", "db status", {"DATABASE_URL": f"postgresql://app:{ENCODED}@:5432/{DATABASE}"}, 4,
         "at the default unix socket (port 5432)"),
    case("url-without-host-hint", "db migrate-deploy", {"DATABASE_URL": f"postgresql://app:{ENCODED}@/{DATABASE}"},
         4, "Try `pg_isready -p 5432`"),
    case("port-out-of-range", "db status",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}@127.0.0.1:99999/{DATABASE}"}, 3, "port"),
    case("port-not-a-number", "db health",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}@127.0.0.1:pg/{DATABASE}"}, 3, "port"),
    case("unencoded-password", "db status",
         {"DATABASE_URL": f"postgresql://app:{PASSWORD}@127.0.0.1:5432/{DATABASE}"}, 3, "percent-encode"),
    case("url-too-long", "db status",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}@127.0.0.1/{DATABASE}?application_name={'x' * 9000}"}, 3,
         "8,192"),
    case("direct-url-malformed", "db migrate-deploy", {**APP, "DIRECT_DATABASE_URL": "postgresql://app@h:0x1/x"},
         3, "DIRECT_DATABASE_URL"),
    case("unknown-host", "db status",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}@no-such-host.invalid:5432/{DATABASE}",
          "CELORA_CONNECT_TIMEOUT": "2"}, 4, "no-such-host.invalid"),
    case("refused-port-json", "db status --json",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}@127.0.0.1:{{refused}}/{DATABASE}"}, 4, "DatabaseUnreachable"),
    # -- settings and dotenv files ---------------------------------------------------------------------------
    case("unknown-celora-env", "db status", {**APP, "CELORA_ENV": "prod"}, 3, "CELORA_ENV"),
    case("production-without-url", "db migrate-deploy", {"CELORA_ENV": "production"}, 3, "DATABASE_URL"),
    case("env-file-bad-line", ("--env-file", "{tmp}/bad_line.env", "db", "status"), APP, 3, "line 2"),
    case("env-file-not-utf8", ("--env-file", "{tmp}/latin1.env", "db", "status"), APP, 3, "UTF-8"),
    case("env-file-missing", ("--env-file", "{tmp}/nowhere.env", "db", "status"), APP, 3, "nowhere.env"),
    case("project-dotenv-corrupt", "db status", {"CELORA_PROJECT_ROOT": "{tmp}/broken_project"}, 3, ".env"),
    case("connect-timeout-zero", "db status", {**APP, "CELORA_CONNECT_TIMEOUT": "0"}, 3, "CELORA_CONNECT_TIMEOUT"),
    case("statement-timeout-huge", "db status", {**APP, "CELORA_STATEMENT_TIMEOUT": "1e12"}, 3,
         "CELORA_STATEMENT_TIMEOUT"),
    case("health-timeout-inf", "db health", {**APP, "CELORA_HEALTH_TIMEOUT": "inf"}, 3, "CELORA_HEALTH_TIMEOUT"),
    case("lock-timeout-negative-env", "db migrate-deploy", {**APP, "CELORA_LOCK_TIMEOUT": "-5"}, 3,
         "CELORA_LOCK_TIMEOUT"),
    case("migrations-dir-missing", "db migrate-deploy", {**APP, "CELORA_MIGRATIONS_DIR": "{tmp}/no_migrations"}, 3,
         "no_migrations"),
    # -- bad flag values -------------------------------------------------------------------------------------
    case("health-timeout-negative", "db health --timeout -1", APP, 3, "--timeout"),
    case("lock-timeout-nan", "db migrate-deploy --lock-timeout nan", APP, 3, "--lock-timeout"),
    case("lock-timeout-words", "db migrate-deploy --lock-timeout soon", APP, 64, "--lock-timeout"),
    case("unknown-option", "db status --frobnicate", APP, 64, "--frobnicate"),
    case("seed-users-negative", "db seed --users -1", APP, 64, "--users"),
    case("rollback-steps-negative", "db rollback --steps -1 --force", APP, 3, "--steps"),
    case("rollback-steps-and-to", "db rollback --steps 1 --to base --force", APP, 3, "not both"),
    case("sslmode-unknown", "db status", {"DATABASE_URL": f"postgresql://app:{ENCODED}@127.0.0.1/x?sslmode=bogus"},
         3, "sslmode"),
    case("connect-timeout-words", "db status --json",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}@127.0.0.1/x?connect_timeout=soon"}, 3, "connect_timeout"),
    case("port-parameter-words", "db status --json",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}@127.0.0.1/x?port=abc"}, 3, "port=abc"),
    # -- against the server: credentials, databases, SSL, the pooler --------------------------------------
    case("wrong-password", "db status", {"DATABASE_URL": f"postgresql://app:{ENCODED}x@{{host}}/{DATABASE}"}, 5,
         "password authentication failed"),
    case("wrong-password-json", "db migrate-deploy --json",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}x@{{host}}/{DATABASE}"}, 5, "AuthenticationFailed"),
    case("unknown-role", "db status", {"DATABASE_URL": f"postgresql://nobody_here:{ENCODED}@{{host}}/{DATABASE}"},
         5, "nobody_here"),
    # db health reports what it found (0/1/2, README): a path it cannot log in on is unhealthy.
    case("health-wrong-password", "db health", {"DATABASE_URL": f"postgresql://app:{ENCODED}x@{{host}}/{DATABASE}"},
         2, "password authentication failed"),
    case("missing-database", "db migrate-deploy",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}@{{host}}/no_such_database"}, 6, "no_such_database"),
    case("ssl-required-unavailable", "db status",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}@{{host}}/{DATABASE}?sslmode=require"}, 3, "sslmode=prefer"),
    case("pgbouncer-flag-without-direct-url", "db migrate-deploy",
         {"DATABASE_URL": f"postgresql://app:{ENCODED}@{{host}}/{DATABASE}?pgbouncer=true"}, 3,
         "DIRECT_DATABASE_URL"),
    # -- destructive commands without their flag, bad names and revisions ----------------------------------
    case("reset-without-force", "db reset", APP, 12, "--force"),
    case("rollback-without-force", "db rollback --steps 1", APP, 12, "--force"),
    case("rollback-unknown-revision", "db rollback --to 19990101000000 --force", APP, 3, "19990101000000"),
    case("resolve-unknown-migration", "db resolve --applied 19990101000000_nothing", APP, 3, "19990101000000"),
    # A name is the file's docstring: quotes or a backslash would write a file Python cannot import.
    case("migration-name-quotes", ("db", "migrate", "--name", 'add """quoted""" label'), MIGRATE, 3,
         "migration name"),
    case("migration-name-windows-path", ("db", "migrate", "--name", r"C:\Users\new"), MIGRATE, 3, "migration name"),
    case("migration-name-blank", ("db", "migrate", "--create-only", "--name", "   "), MIGRATE, 3, "migration name"),
    # (a role without CREATEDB is no user error any more: the snapshots answer the drift check, and a shadow goes
    # on the local PostgreSQL; tests/schema/test_drift.py and test_shadow_fallback.py cover it)
    case("migrate-rename-without-colon", ("db", "migrate", "--name", "x", "--rename", "users.photo_url"), MIGRATE, 3,
         "--rename"),
    case("diff-unknown-source", ("db", "diff", "--from", "yesterday", "--to", "models"), APP, 3, "yesterday"),
    case("diff-missing-sql-file", ("db", "diff", "--from", "{tmp}/no-such.sql", "--to", "models"), APP, 3,
         "no-such.sql"),
    # -- broken fixture files ----------------------------------------------------------------------------------
    case("fixtures-bad-toml", "db seed --fixtures {tmp}/fixtures_bad_toml", APP, 3, "TOML syntax error"),
    case("fixtures-wrong-type", "db seed --fixtures {tmp}/fixtures_wrong_type", APP, 3, "expected"),
    case("fixtures-unknown-chain", "db seed --fixtures {tmp}/fixtures_unknown_chain", APP, 3, "dogecoin"),
    # -- servers on a port that is taken ({taken} is the cluster's own port), files that exist -------------------
    case("studio-port-taken", "db studio --no-browser --port {taken}", APP, 3, "{taken}"),
    case("metrics-port-taken", "db metrics --port {taken}", APP, 3, "{taken}"),
    case("backup-output-exists", "db backup --output {tmp}/bad_line.env", APP, 3, "already exists"),
    case("audit-prune-not-a-duration", "db audit --prune-older-than banana", APP, 64, "--prune-older-than"),
    # -- revisions Alembic chokes on, histories it only warns about, files that cannot be written -------------
    case("rollback-to-empty", ("db", "rollback", "--to", "", "--force"), APP, 64, "--to"),  # an unset variable
    case("rollback-to-at-sign", "db rollback --to @ --force", APP, 3, "no such revision"),  # Alembic asserts
    case("resolve-at-sign", "db resolve --applied @", APP, 3, "no such migration"),
    case("duplicate-revision-deploy", "db migrate-deploy", {**APP, "CELORA_MIGRATIONS_DIR": "{tmp}/migrations_dup"},
         14, "appears in 2 migration files"),
    case("duplicate-revision-status-json", "db status --json",
         {**APP, "CELORA_MIGRATIONS_DIR": "{tmp}/migrations_dup"}, 14, "29990101000000_copied.py"),
    case("generate-docs-is-a-file", "db generate", {"CELORA_PROJECT_ROOT": "{tmp}/docs_is_a_file"}, 74,
         "is a file, not a folder"),
    # A file that cannot be written is not stdout: the JSON error object still comes.
    case("generate-docs-is-a-file-json", "db generate --json", {"CELORA_PROJECT_ROOT": "{tmp}/docs_is_a_file"}, 74,
         "OutputError"),
]


def _broken_files(tmp: Path) -> None:
    (tmp / "bad_line.env").write_text("CELORA_ENV=test\nTHIS LINE IS NOT KEY=VALUE 'unclosed\n")
    (tmp / "latin1.env").write_bytes("CELORA_ENV=test\nAPP_NAME=caf\xe9\n".encode("latin-1"))
    project = tmp / "broken_project"
    project.mkdir()
    (project / "migrations").symlink_to(REPO / "migrations")
    (project / ".env").write_bytes(b'DATABASE_URL="postgresql://app@127.0.0.1/x\n\xff\xfe\n')
    shutil.copytree(REPO / "migrations", tmp / "migrations_copy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "migrations", tmp / "migrations_dup", ignore=shutil.ignore_patterns("__pycache__"))
    original = next((tmp / "migrations_dup" / "versions").glob("*_schema_corrections.py"))
    shutil.copy(original, tmp / "migrations_dup" / "versions" / "29990101000000_copied.py")  # the same revision id
    shutil.copytree(REPO / "migrations", tmp / "docs_is_a_file" / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / "docs_is_a_file" / "docs").write_text("a file where generate wants a folder\n")
    for name, edit in (("fixtures_bad_toml", ("users.toml", "[[users]\nemail = ")),
                       ("fixtures_wrong_type", ("wallets.toml", None)),
                       ("fixtures_unknown_chain", ("wallets.toml", None))):
        target = tmp / name
        shutil.copytree(REPO / "fixtures", target)
        file, text = edit
        if text is not None:
            (target / file).write_text(text)
    wallets = (REPO / "fixtures" / "wallets.toml").read_text()
    (tmp / "fixtures_wrong_type" / "wallets.toml").write_text(
        wallets.replace('chain = "celo"', 'chain = 42', 1))
    (tmp / "fixtures_unknown_chain" / "wallets.toml").write_text(
        wallets.replace('chain = "celo"', 'chain = "dogecoin"', 1))


def _snapshot(admin_url: str) -> dict:
    """What a bad input must not change: the databases, the schema's objects and every table's rows."""
    with psycopg.connect(admin_url.replace("/postgres", f"/{DATABASE}"), autocommit=True) as conn:
        objects = conn.execute("SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
                               "ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1").fetchall()
        rows = {name: conn.execute(f'SELECT md5(string_agg(t::text, \'|\' ORDER BY t::text)), count(*) '
                                   f'FROM "{name}" t').fetchone()
                for name, kind in objects if kind == "r"}
        types = conn.execute("SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                             "WHERE n.nspname = 'public' ORDER BY 1").fetchall()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        databases = conn.execute("SELECT datname FROM pg_database ORDER BY 1").fetchall()
    return {"objects": objects, "rows": rows, "types": types, "databases": databases}


@pytest.fixture(scope="module")
def server():
    with throwaway_cluster("celora-matrix-pg-") as cluster:
        admin = cluster.url("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER app")
            hba = conn.execute("SHOW hba_file").fetchone()[0]
            # celora (the superuser the fixtures use) keeps trust; every other role needs its password.
            Path(hba).write_text("host all celora 127.0.0.1/32 trust\n"
                                 "host all all 127.0.0.1/32 scram-sha-256\n")
            conn.execute("SELECT pg_reload_conf()")
        yield cluster


@pytest.fixture(scope="module")
def results(server):
    host = f"127.0.0.1:{server.port}"
    app_url = f"postgresql://app:{ENCODED}@{host}/{DATABASE}"
    from celora_cli.config.settings import load_settings
    from celora_cli.data.seed.apply import seed
    from celora_cli.migrate.deploy import deploy

    settings = load_settings(environ={"DATABASE_URL": app_url, "CELORA_ENV": "test"}, project_root=TEST_PROJECT)
    deploy(settings)
    seed(settings, REPO / "fixtures")  # rows in every table, so a stray write shows in the snapshot
    tmp = shared_tmpdir("celora-matrix-files-")
    _broken_files(tmp)
    places = {"app": app_url, "host": host, "tmp": str(tmp), "refused": str(free_port()),
              "taken": str(server.port)}
    versions_before = sorted((tmp / "migrations_copy" / "versions").iterdir())

    def run(row: Case):
        args = [a.format(**places) for a in row.args]
        env = {"CELORA_ENV": "test", **{k: v.format(**places) for k, v in row.env.items()}}
        return row.id, run_celora(*args, env=env, timeout=60)

    before = _snapshot(server.url("postgres"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcome = dict(pool.map(run, CASES))
    after = _snapshot(server.url("postgres"))
    yield {"outcome": outcome, "before": before, "after": after, "places": places,
           "versions_unchanged": versions_before == sorted((tmp / "migrations_copy" / "versions").iterdir())}
    shutil.rmtree(tmp, ignore_errors=True)


def test_the_matrix_has_at_least_30_cases_with_distinct_ids():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("row", [c.param() for c in CASES])
def test_bad_input(row: Case, results):
    result = results["outcome"][row.id]
    both = result.stdout + result.stderr
    assert result.returncode == row.code, f"exit {result.returncode}, wanted {row.code}:\n{both}"
    assert row.fragment.format(**results["places"]).lower() in both.lower(), both
    assert "Traceback" not in both and "Unexpected error" not in both and "unexpected internal error" not in both
    for secret in SECRETS:
        assert secret not in both, f"password leaked as {secret!r}:\n{both}"
    if "--json" in row.args:
        error = json.loads(result.stdout)["error"]  # exactly one JSON object on stdout, even on failure
        assert error["code"] == row.code
    assert results["before"] == results["after"], "a bad input changed the database"
    assert results["versions_unchanged"], "a bad input wrote a migration file"
