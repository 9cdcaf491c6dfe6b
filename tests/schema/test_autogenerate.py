"""The pieces of `celora db migrate`'s autogenerate that need no database: rename suspicion, enum rendering,
how differences are described (revision ids: tests/migrate/test_revision_ids.py)."""

from __future__ import annotations

import pytest
from alembic.operations import ops
from sqlalchemy import Column, Enum, Integer, Text

from celora_cli.results import to_json
from celora_cli.schema import autogenerate
from celora_cli.schema.drift import Difference, _changed
from celora_cli.schema.enums import render_enum_without_create


def table_ops(*column_ops) -> ops.UpgradeOps:
    return ops.UpgradeOps(ops=[ops.ModifyTableOps("users", list(column_ops))])


def test_a_drop_and_an_add_of_the_same_type_is_a_suspected_rename():
    upgrade = table_ops(ops.AddColumnOp("users", Column("nickname", Text())),
                        ops.DropColumnOp("users", "nick", _reverse=ops.AddColumnOp("users", Column("nick", Text()))))
    (warning,) = autogenerate._suspected_renames(upgrade)
    assert "suspected rename users.nick -> users.nickname (both TEXT)" in warning
    assert "op.alter_column('users', 'nick', new_column_name='nickname')" in warning


def test_a_drop_and_an_add_of_different_types_is_not_flagged():
    upgrade = table_ops(ops.AddColumnOp("users", Column("age", Integer())),
                        ops.DropColumnOp("users", "nick", _reverse=ops.AddColumnOp("users", Column("nick", Text()))))
    assert autogenerate._suspected_renames(upgrade) == []
    assert autogenerate._suspected_renames(table_ops(ops.AddColumnOp("users", Column("age", Integer())))) == []


def test_enum_columns_render_without_creating_the_type():
    class Context:
        imports: set = set()

    rendered = render_enum_without_create("type", Enum("a", "b'c", name="kind"), Context())
    assert rendered == "postgresql.ENUM('a', \"b'c\", name='kind', create_type=False)"
    assert "from sqlalchemy.dialects import postgresql" in Context.imports
    assert render_enum_without_create("type", Text(), Context()) is False


def test_extras_wrap_the_rendered_body():
    assert autogenerate._with_extras("op.x()", [], []) == "op.x()"
    assert autogenerate._with_extras("op.x(\n        a)", ["# before"], ["op.y()"]) == \
        "# before\n    op.x(\n        a)\n    op.y()"


def test_an_enum_difference_names_each_label():
    found = _changed("enum", "chain", "'celo', 'tron'", "'celo', 'solana'")
    assert [(d.kind, d.name, d.change) for d in found] == [
        ("enum label", "chain.tron", "extra"), ("enum label", "chain.solana", "missing")]
    assert _changed("enum", "chain", "'b', 'a'", "'a', 'b'")[0].change == "changed"  # order matters in PostgreSQL


def test_differences_say_where_each_object_is():
    extra = Difference("column", "users.nickname", "extra", database="text")
    assert extra.describe() == "column users.nickname exists in the database but not in the migration history (text)"
    missing = Difference("index", "users.ix", "missing", expected="CREATE INDEX ix ON users (email)")
    assert "is in the migration history but missing from the database" in missing.describe()
    changed = Difference("column", "wallets.label", "changed", database="text", expected="text NOT NULL")
    assert changed.describe() == ("column wallets.label differs: the database has text; the migration history "
                                  "has text NOT NULL")
    assert to_json(changed)["expected"] == "text NOT NULL"


def test_shadow_url_setting_is_read_and_validated(tmp_path):
    from celora_cli.config.settings import load_settings
    from celora_cli.errors import ConfigError

    assert load_settings(environ={}, project_root=tmp_path).shadow_database_url is None
    settings = load_settings(environ={"SHADOW_DATABASE_URL": "postgresql://u:pw@h:5433/shadow"}, project_root=tmp_path)
    url = settings.shadow_database_url
    assert url is not None and url.database == "shadow" and "pw" not in url.masked and "pw" in settings.secrets()
    with pytest.raises(ConfigError, match="SHADOW_DATABASE_URL"):
        load_settings(environ={"SHADOW_DATABASE_URL": "mysql://u@h/x"}, project_root=tmp_path)


def test_migrate_and_generate_have_help(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from celora_cli.cli.app import app

    monkeypatch.chdir(tmp_path)
    for command, words in ((["db", "migrate"], ("--name", "--create-only", "shadow")),
                           (["db", "generate"], ("--check", "schema.sql", "Mermaid"))):
        result = CliRunner().invoke(app, [*command, "--help"], env={"CELORA_PROJECT_ROOT": str(tmp_path),
                                                                    "NO_COLOR": "1", "COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert all(word in result.output for word in words), result.output


def test_commands_that_write_never_touch_the_packaged_migrations(tmp_path, monkeypatch):
    import pytest

    from celora_cli.config.settings import load_settings
    from celora_cli.errors import ConfigError
    from celora_cli.migrate import scripts
    from celora_cli.schema import generate

    packaged = tmp_path / "site-packages" / "celora_cli" / "_migrations"
    packaged.mkdir(parents=True)
    (packaged / "env.py").write_text("")
    monkeypatch.setattr(scripts, "PACKAGED_MIGRATIONS", packaged)
    project = tmp_path / "project"
    project.mkdir()
    settings = load_settings(environ={}, project_root=project)
    assert scripts.find_migrations_dir(settings) == packaged  # what read-only commands may use
    with pytest.raises(ConfigError, match="copy packaged inside celora"):
        generate.generate(settings)
    with pytest.raises(ConfigError, match="copy packaged inside celora"):
        autogenerate.migrate_dev(settings, name="x")
    assert list(packaged.iterdir()) == [packaged / "env.py"]
