"""Schema sources made into databases, for comparing them: the migration history at a revision replayed into a
shadow database, the models created in one, a schema SQL file loaded into one.

Every shadow comes from `celora_cli.schema.autogenerate.shadow_database` (a temporary `celora_shadow_<random>`
on the server of DATABASE_URL, or SHADOW_DATABASE_URL emptied), whose `finally` drops it again: on success, on
an error and on Ctrl-C alike. The temporary database is announced on stderr (nothing celora creates unasked is
silent). Nothing here writes to any database but a shadow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from alembic.util.exc import CommandError

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import connect
from celora_cli.db.errors import translating
from celora_cli.errors import ConfigError
from celora_cli.migrate.connection import migration_engine, open_migration_connection
from celora_cli.schema.autogenerate import SHADOW_PREFIX, SHADOW_VARIABLE, shadow_database

notice = logging.getLogger("celora.notice")
BASE = "base"  # migrations@base: the empty schema before the first migration


def on(settings: Settings, url: DatabaseURL) -> Settings:
    """The settings with `url` as the one database (no separate direct URL)."""
    return dataclasses.replace(settings, database_url=url, direct_database_url=None)


@contextlib.contextmanager
def shadow(settings: Settings, host_url: DatabaseURL, configured: DatabaseURL | None, purpose: str) \
        -> Iterator[DatabaseURL]:
    """A blank shadow database (announced), dropped or emptied on the way out whatever happens."""
    with shadow_database(settings, host_url, configured) as url:
        if configured is None:
            notice.info(f"Using a temporary database {url.database} on {host_url.display_host} for {purpose}; "
                        f"it is dropped afterwards (set {SHADOW_VARIABLE} to use a database of your own).")
        yield url


def resolve_revision(script, revision: str, source: str) -> str | None:
    """A revision id (a unique prefix, `head` or `base` too) of the history; None for base (the empty schema).
    ConfigError naming the source when the history has no such revision."""
    if revision == BASE:
        return None
    try:
        found = script.get_revision(revision)
    except CommandError as exc:
        raise ConfigError(f"{source}: the migration history has no revision {revision!r} ({exc}).",
                          "List the revisions with `celora db status` (or `alembic history`), and name one of "
                          "them, `head` or `base`.") from None
    if found is None:
        return None
    if isinstance(found, tuple):  # several heads
        raise ConfigError(f"{source}: {revision!r} names several revisions.", "Name one revision id.")
    return found.revision


def create_models(settings: Settings, metadata) -> None:
    """metadata.create_all on settings' database (a shadow), with the metadata's own DDL events (functions,
    triggers) as create_all runs them."""
    engine, url, setting = migration_engine(settings, "celora (shadow)")
    try:
        with translating(url, setting):
            conn = open_migration_connection(engine, url, setting)
            try:
                metadata.create_all(conn)
                conn.commit()
            finally:
                conn.close()
    finally:
        engine.dispose()


# psql's meta-commands (\connect, \restrict, \set ...) are psql's, not SQL: a pg_dump file holds some.
_META_COMMAND = re.compile(r"^\\.*$", re.MULTILINE)


def read_sql_file(path: Path, source: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file {path}.",
                          "Give the path of a schema SQL file (e.g. `pg_dump --schema-only --no-owner "
                          "--no-privileges > schema.sql`).") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: {path} is a folder, not a SQL file.", "Give the path of a .sql file.") \
            from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}).",
                          "Save the schema file as UTF-8.") from None
    except OSError as exc:
        raise ConfigError(f"{source}: {path} can't be read ({exc.strerror}).",
                          "Check the file's permissions.") from None
    return _META_COMMAND.sub("", text)


def load_sql(settings: Settings, url: DatabaseURL, sql_text: str, path: Path, source: str) -> None:
    """Run a schema SQL file on a shadow; a statement PostgreSQL refuses is a ConfigError naming the file, the
    line and PostgreSQL's message (the shadow is thrown away, so a half-loaded file leaves nothing behind)."""
    import psycopg

    if not sql_text.strip():
        return
    with translating(url, "the shadow database"), \
            connect(url, settings, application_name="celora (shadow)") as conn:
        try:
            conn.execute(sql_text)  # a script: many statements, no parameters
        except psycopg.DatabaseError as exc:
            diag = exc.diag
            position = int(diag.statement_position) if diag.statement_position else None
            where = f" at line {sql_text.count(chr(10), 0, position - 1) + 1}" if position else ""
            message = diag.message_primary or str(exc).splitlines()[0]
            raise ConfigError(
                f"{source}: PostgreSQL refused {path}{where}: {message} (SQLSTATE {exc.sqlstate}). The file was "
                "loaded into a temporary shadow database, which is dropped; nothing else was touched.",
                "Fix the file. A pg_dump of the schema loads as is when made with `pg_dump --schema-only "
                "--no-owner --no-privileges`.") from None


def is_shadow(url: DatabaseURL) -> bool:
    return bool(url.database and url.database.startswith(SHADOW_PREFIX))
