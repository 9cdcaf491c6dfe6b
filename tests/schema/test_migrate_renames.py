"""`celora db migrate --rename`: a column (or table) renamed in the models is written as a rename, so its values stay;
without the flag (and no terminal) a drop that loses data is refused, naming --rename and --accept-data-loss.
The models are celora's own with one rename (CELORA_MODELS points at a module in the throwaway project)."""

from __future__ import annotations

import psycopg
import pytest

from tests.schema.test_migrate_dev import columns, dev_database, env_for, project, versions  # noqa: F401
from tests.support import run_celora, run_celora_at_terminal

COPY = """
from sqlalchemy import Column, Integer, MetaData, Text

from celora_cli.db.models import Base

metadata = MetaData(naming_convention=Base.metadata.naming_convention)
for table in Base.metadata.sorted_tables:
    table.to_metadata(metadata)
users = metadata.tables["users"]
"""
# users.photo_url renamed avatar_url (same type): a rename autogenerate sees as drop + add.
RENAMED = COPY + """
users._columns.remove(users.c.photo_url)
users.append_column(Column("avatar_url", Text))
"""
RETYPED = COPY + """
users._columns.remove(users.c.photo_url)
users.append_column(Column("avatar_url", Integer))
"""
# notifications renamed user_notifications, columns unchanged.
TABLE_RENAMED = """
from sqlalchemy import MetaData

from celora_cli.db.models import Base

metadata = MetaData(naming_convention=Base.metadata.naming_convention)
for table in Base.metadata.sorted_tables:
    table.to_metadata(metadata, name="user_notifications" if table.name == "notifications" else None)
"""
PHOTOS = ("https://example.com/a.png", "https://example.com/ü 'quoted'.png")


@pytest.fixture
def migrated(project, dev_database):  # noqa: F811 - the imported fixtures
    """(URL, project) at head with two users holding photo URLs; the model modules written."""
    name, url = dev_database
    for module, body in (("renamed", RENAMED), ("retyped", RETYPED), ("table_renamed", TABLE_RENAMED)):
        (project / f"{module}.py").write_text(body)
    first = run_celora("db", "migrate", env=env_for(project, url))
    assert first.returncode == 0, first.stdout + first.stderr
    with psycopg.connect(url) as conn:
        for index, photo in enumerate(PHOTOS):
            conn.execute("INSERT INTO users (firebase_uid, photo_url) VALUES (%s, %s)", (f"uid-{index}", photo))
    return url, project


def photos(url: str, column: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(f"SELECT {column} FROM users ORDER BY firebase_uid")]


def test_a_renamed_column_keeps_its_values_with_rename(migrated):
    url, root = migrated
    before = versions(root)

    # Without a terminal and without --rename, the drop that loses 2 values is refused, naming both ways out.
    refused = run_celora("db", "migrate", "--name", "rename_photo", env=env_for(root, url, "renamed:metadata"))
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "column users.photo_url is dropped (2 non-null values)" in refused.stderr
    assert "--rename users.photo_url:avatar_url" in refused.stderr and "--accept-data-loss" in refused.stderr
    assert versions(root) == before and photos(url, "photo_url") == list(PHOTOS)

    renamed = run_celora("db", "migrate", "--name", "rename_photo", "--rename", "users.photo_url:avatar_url",
                         env=env_for(root, url, "renamed:metadata"))
    assert renamed.returncode == 0, renamed.stdout + renamed.stderr
    assert "Renamed column users.photo_url -> users.avatar_url" in renamed.stdout
    (written,) = versions(root) - before
    body = " ".join((root / "migrations" / "versions" / written).read_text().split())
    upgrade, downgrade = body.split("def downgrade")
    assert "op.alter_column('users', 'photo_url', existing_type=sa.TEXT(), new_column_name='avatar_url'" in upgrade
    assert "op.alter_column('users', 'avatar_url', existing_type=sa.TEXT(), new_column_name='photo_url'" \
        in downgrade
    assert "drop_column" not in body and "add_column" not in body
    assert photos(url, "avatar_url") == list(PHOTOS)
    assert "photo_url" not in columns(url, "users")

    again = run_celora("db", "migrate", env=env_for(root, url, "renamed:metadata"))
    assert again.returncode == 0 and "Already in sync" in again.stdout, again.stdout + again.stderr

    # The downgrade really is the inverse: rolled back, the values are under the old name again.
    back = run_celora("db", "rollback", "--steps", "1", "--force", env=env_for(root, url, "renamed:metadata"))
    assert back.returncode == 0, back.stdout + back.stderr
    assert photos(url, "photo_url") == list(PHOTOS)


def test_accept_data_loss_drops_and_adds(migrated):
    url, root = migrated
    result = run_celora("db", "migrate", "--name", "replace_photo", "--accept-data-loss",
                        env=env_for(root, url, "renamed:metadata"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "suspected rename users.photo_url -> users.avatar_url" in result.stderr
    assert photos(url, "avatar_url") == [None, None]

    created = run_celora("db", "migrate", "--name", "x", "--create-only", env=env_for(root, url))
    assert created.returncode == 0, created.stdout + created.stderr  # nothing applied: a warning, not a refusal


@pytest.mark.parametrize(("flag", "expected"), [
    ("users.nope:avatar_url", "the models do not drop column users.nope and add users.avatar_url (in table users "
                              "they drop photo_url and add avatar_url)"),
    ("wallets.label:title", "they drop and add no column in table wallets"),
    ("users.photo_url:wallets.photo", "moves a column to another table"),
    ("photo_url", "is not a rename"),
    ("ghost:spirit", "the models do not drop table ghost and create spirit"),
])
def test_a_rename_that_matches_nothing_is_a_config_error(migrated, flag, expected):
    url, root = migrated
    before = versions(root)
    result = run_celora("db", "migrate", "--name", "x", "--rename", flag, env=env_for(root, url, "renamed:metadata"))
    assert result.returncode == 3, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert versions(root) == before and photos(url, "photo_url") == list(PHOTOS)


def test_a_rename_between_different_types_is_a_config_error(migrated):
    url, root = migrated
    result = run_celora("db", "migrate", "--name", "x", "--rename", "users.photo_url:avatar_url",
                        env=env_for(root, url, "retyped:metadata"))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "users.photo_url is TEXT but users.avatar_url is INTEGER" in result.stderr


def test_a_renamed_table_keeps_its_rows(migrated):
    url, root = migrated
    with psycopg.connect(url) as conn:
        user = conn.execute("SELECT id FROM users LIMIT 1").fetchone()[0]
    _insert_notification(url, user)
    refused = run_celora("db", "migrate", "--name", "rename_table", env=env_for(root, url, "table_renamed:metadata"))
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "table notifications is dropped (1 row)" in refused.stderr
    assert "--rename notifications:user_notifications" in refused.stderr

    result = run_celora("db", "migrate", "--name", "rename_table", "--rename", "notifications:user_notifications",
                        env=env_for(root, url, "table_renamed:metadata"))
    assert result.returncode == 0, result.stdout + result.stderr
    body = next((root / "migrations" / "versions").glob("*_rename_table.py")).read_text()
    assert "op.rename_table('notifications', 'user_notifications')" in body
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM user_notifications").fetchone()[0] == 1
    again = run_celora("db", "migrate", env=env_for(root, url, "table_renamed:metadata"))
    assert again.returncode == 0 and "Already in sync" in again.stdout, again.stdout + again.stderr


def test_at_a_terminal_a_suspected_rename_is_asked_about(migrated):
    url, root = migrated
    process = run_celora_at_terminal("y", "db", "migrate", "--name", "asked",
                                     env=env_for(root, url, "renamed:metadata"), cwd=root)
    assert process.returncode == 0, process.stdout + process.stderr
    assert "Is column users.photo_url -> users.avatar_url a rename?" in process.stderr
    assert photos(url, "avatar_url") == list(PHOTOS)


def _insert_notification(url: str, user) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO notifications (user_id, channel, type, title, body) VALUES "
                     "(%s, (enum_range(NULL::notification_channel))[1], 'welcome', 'Hello', 'Welcome!')", (user,))


# -- the rules, without a database ----------------------------------------------------------------------------

def test_rename_flags_parse_to_columns_and_tables_and_odd_input_is_a_config_error():
    from celora_cli.errors import ConfigError
    from celora_cli.schema.renames import Rename, parse

    assert parse(["users.photo_url:avatar_url", "users.a:users.b", "old_t:new_t", " Ünï.cödé:x "]) == [
        Rename("users", "photo_url", "avatar_url"), Rename("users", "a", "b"),
        Rename("old_t", "old_t", "new_t", column=False), Rename("Ünï", "cödé", "x")]
    for bad in ("", "users", "a.b.c:d", "a:b:c", "users.a:", ":b", "users.a b:c", "x" * 10 + ".a:wallets.b"):
        with pytest.raises(ConfigError):
            parse([bad])


def test_suspected_pairs_need_the_same_type_or_the_same_columns():
    from alembic.operations import ops
    from sqlalchemy import Column, Integer, MetaData, Table, Text

    from celora_cli.schema.renames import check, suspected

    def table(name, *cols):
        return Table(name, MetaData(), Column("id", Integer, primary_key=True), *cols)

    upgrade = ops.UpgradeOps(ops=[
        ops.ModifyTableOps("users", [ops.DropColumnOp.from_column_and_tablename(None, "users", Column("a", Text)),
                                     ops.AddColumnOp("users", Column("b", Text)),
                                     ops.AddColumnOp("users", Column("n", Integer))]),
        ops.DropTableOp.from_table(table("old_t", Column("x", Text))),
        ops.CreateTableOp.from_table(table("new_t", Column("x", Text))),
        ops.CreateTableOp.from_table(table("other_t", Column("y", Text))),
    ])
    found = {(r.table, r.old, r.new, r.column) for r in suspected(upgrade)}
    assert found == {("users", "a", "b", True), ("old_t", "old_t", "new_t", False)}
    from celora_cli.errors import ConfigError
    from celora_cli.schema.renames import parse

    check(parse(["users.a:b", "old_t:other_t"]), upgrade)  # a table rename may change its columns
    with pytest.raises(ConfigError, match="users.a is TEXT but users.n is INTEGER"):
        check(parse(["users.a:n"]), upgrade)
