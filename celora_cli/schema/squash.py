"""`celora db squash --to REV`, the generating half: the history up to REV replayed in a shadow database (the one
`celora db migrate` uses: temporary on the development server, or SHADOW_DATABASE_URL), its schema dumped, and the
dump cleaned into the squashed migration's upgrade and downgrade SQL. The history half (the plan, the refusals, the
files, what deploy, status and the journal make of a squash) is celora_cli.migrate.squash.

Why pg_dump and not Alembic's autogenerate from an empty database: autogenerate compares tables, columns, indexes
and constraints only. The history also creates enum types, trigger functions (one SECURITY DEFINER with a pinned
search_path), triggers, grants and revokes; pg_dump prints every one of them, in an order that applies, and its
--clean mode prints the DROP statements that undo them. The dump is taken with --no-owner (the squash runs as
whoever runs migrations) and without the bookkeeping tables (alembic_version, celora_metadata, celora_migrations);
its session settings (search_path emptied, timeouts off) and psql meta-commands (\\restrict) are removed, and a
grant to or revoke from the role that replayed the history names CURRENT_USER instead.

`dump` is handed in (the CLI passes celora_cli.ops.backup.schema_dump.schema_sql): running pg_dump is the
backup package's craft, and schema may not import ops.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import connect, direct_url
from celora_cli.db.errors import translating
from celora_cli.migrate.scripts import alembic_config, script_directory
from celora_cli.migrate.squash import SquashPlan, SquashResult, plan_squash, write_squash
from celora_cli.migrate.steps import upgrade_to
from celora_cli.schema.autogenerate import shadow_database
from celora_cli.schema.drift import IGNORED_TABLES
from celora_cli.schema.generate import project_migrations_dir

Dump = Callable[..., str]  # dump(url, settings, exclude=...) -> pg_dump --schema-only --clean --if-exists output
Confirm = Callable[[SquashPlan], None]  # raises Refused to stop

SOURCE = ("the schema those migrations create, as `pg_dump --schema-only --clean --if-exists --no-owner` printed it "
          "from a shadow database that replayed them")
# Session settings pg_dump opens with: in a migration they would leak into the migration connection (an empty
# search_path would hide alembic_version from Alembic itself).
_PREAMBLE = re.compile(r"^(SET \w+ = .*;|SELECT pg_catalog\.set_config\('search_path', '', false\);)$")
_META = re.compile(r"^\\(restrict|unrestrict)\b.*$", re.MULTILINE)
_TOC_HEADER = re.compile(r"^--\n-- (?:Name|Data for Name|TOC entry)[^\n]*\n--\n", re.MULTILINE)
_DUMP_COMMENT = re.compile(r"^-- (?:PostgreSQL database dump(?: complete)?|Dumped (?:from|by) .*)$|^--$",
                           re.MULTILINE)


def squash(settings: Settings, to: str, *, dump: Dump, confirm: Confirm, name: str | None = None) -> SquashResult:
    """Plan (refusals first), confirm, generate in a shadow, then write the files."""
    project_migrations_dir(settings, "celora db squash")  # it rewrites files: the project's own history only
    plan = plan_squash(settings, to, name=name)
    confirm(plan)
    upgrade_sql, downgrade_sql = generate_sql(settings, plan.target, dump)
    return write_squash(plan, upgrade_sql, downgrade_sql, source=SOURCE)


def generate_sql(settings: Settings, target: str, dump: Dump) -> tuple[str, str]:
    """(upgrade, downgrade) SQL of the history up to `target`, from a shadow database."""
    config = alembic_config(settings)
    script = script_directory(settings, config)
    dev_url = direct_url(settings)
    with shadow_database(settings, dev_url, settings.shadow_database_url) as shadow:
        shadow_settings = dataclasses.replace(settings, database_url=shadow, direct_database_url=None)
        upgrade_to(shadow_settings, config, script, target, "celora squash (shadow)")
        role = _current_user(shadow, settings)
        text = dump(shadow, settings, exclude=IGNORED_TABLES)
    return clean_dump(text, role)


def _current_user(url: DatabaseURL, settings: Settings) -> str:
    with translating(url, "the shadow database"), \
            connect(url, settings, application_name="celora squash (shadow)") as conn:
        return conn.execute("SELECT current_user").fetchone()[0]


def clean_dump(text: str, role: str) -> tuple[str, str]:
    """pg_dump --clean --if-exists output -> (upgrade SQL, downgrade SQL)."""
    text = _META.sub("", text.replace("\r\n", "\n"))
    head, marker, body = text.partition("\n--\n-- Name: ")
    body = marker.lstrip("\n") + body if marker else ""
    drops = [line for line in head.splitlines()
             if line.strip() and not line.startswith("--") and not _PREAMBLE.match(line)]
    body = _DUMP_COMMENT.sub("", _TOC_HEADER.sub("", body))
    body = _current_user_grants(body, role)
    creates = re.sub(r"\n{3,}", "\n\n", body).strip("\n")
    # Functions of LANGUAGE sql are checked against the catalog when created; pg_dump switches that off because it
    # creates them before the tables they may read. SET LOCAL: for this migration's transaction only.
    upgrade = f"SET LOCAL check_function_bodies = false;\n\n{creates}\n" if creates else ""
    downgrade = "\n".join(drops) + "\n" if drops else ""
    return upgrade, downgrade


def _current_user_grants(body: str, role: str) -> str:
    """GRANT ... TO role / REVOKE ... FROM role, for the role that replayed the history: CURRENT_USER, the role that
    will run the squash (on another server it may have another name)."""
    quoted = role if re.fullmatch(r"[a-z_][a-z0-9_$]*", role) else '"' + role.replace('"', '""') + '"'
    pattern = re.compile(rf"^((?:GRANT|REVOKE) .* (?:TO|FROM) ){re.escape(quoted)}((?: WITH GRANT OPTION)?;)$",
                         re.MULTILINE)
    return pattern.sub(r"\1CURRENT_USER\2", body)


__all__ = ["SOURCE", "clean_dump", "generate_sql", "squash"]
