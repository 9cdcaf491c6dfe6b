"""`celora db restore`: a backup restored into a fresh database, verified, then swapped in by name.

Why not `pg_restore --clean` into the live database: --clean drops only the objects the dump has, so a table a
later migration created stays behind beside an older alembic_version, and a failure half-way through (without
--single-transaction) leaves a mixture. Restoring into a new database first and renaming gives:
- the target is untouched until the restored copy holds exactly the tables and row counts of the manifest
  (a restore is always verified; `--verify` alone stops there and drops the copy);
- the result equals the backup, with nothing left over from the database it replaces;
- the switch is two renames, after the target's sessions are ended (new connections are refused meanwhile).
The costs, said in the README: it needs the CREATEDB privilege and ownership of the target (or a superuser),
room for a second copy while it runs, and database-level settings are copied over (ALTER DATABASE ... SET)
while grants on the database itself (GRANT CONNECT) are not. Restored objects belong to the restoring role
(--no-owner), as the migrations would have created them.

The target keeps its environment stamp (celora_metadata, celora_cli.safety.stamp): the restored copy gets the
target's stamps before it is swapped in, so a development backup restored into production leaves a database still
stamped production (and still guarded), and the result says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import celora_cli.ops.backup.replay as replay
from celora_cli.config.settings import DatabaseURL, Settings, redact
from celora_cli.db.admin import (
    creating,
    database_exists,
    drop_database,
    maintenance_connection,
    terminate_sessions,
    with_database,
)
from celora_cli.db.connect import connect, direct_url
from celora_cli.db.errors import translating
from celora_cli.errors import ConfigError, DatabaseError, DatabaseNotFound
from celora_cli.ops.backup.catalog import direct_setting, refuse_pooler, server_version, table_counts
from celora_cli.ops.backup.manifest import BackupIncompatible, BackupInvalid, Manifest, load_checked
from celora_cli.ops.backup.tools import conninfo, find_client_tools, mismatch_hint, tool_environment, version_major
from celora_cli.safety.stamp import METADATA_TABLE, read_stamps, write_stamp

notice = logging.getLogger("celora.notice")
_LIST_SETTINGS = {"search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries"}
_NAME_LIMIT = 63  # PostgreSQL's identifier length (NAMEDATALEN - 1), in bytes
_WITHOUT_CREATEDB = ("restore by hand into the existing database, accepting that objects the backup lacks stay: "
                     "`pg_restore --clean --if-exists --single-transaction --no-owner --dbname <direct URL> FILE`")


@dataclass
class VerifyResult:
    file: str
    scratch_database: str  # created and dropped again
    tables: dict[str, int]  # as restored (= the manifest's, or this raises)
    schema_revision: str | None
    backup_created_at: str
    duration_ms: float


@dataclass(frozen=True)
class RestorePlan:
    database: str  # masked URL of the target
    file: str
    backup_created_at: str
    backup_revision: str | None
    current_tables: dict[str, int]  # what the target holds now (lost)
    database_env: str | None
    exists: bool = True  # False: the database is created from the backup (a new server, disaster recovery)
    stamps: dict[str, str] = field(default_factory=dict)  # the target's environment stamps, by schema: kept

    def losses(self) -> list[str]:
        if not self.exists:
            return []
        lost = [f"table {name} ({rows:,} row{'' if rows == 1 else 's'}) replaced" for name, rows
                in self.current_tables.items()]
        return lost + [f"every other object and setting in the database, replaced by the backup of "
                       f"{self.backup_created_at}"]


@dataclass
class RestoreResult:
    database: str
    file: str
    tables: dict[str, int]
    schema_revision: str | None
    backup_created_at: str
    replaced_tables: dict[str, int] = field(default_factory=dict)  # what the target held before
    duration_ms: float = 0.0
    environment: str | None = None  # the database's environment stamp afterwards (the target's, kept)


Confirm = Callable[[RestorePlan], None]  # raises Refused to stop


def verify_backup(settings: Settings, file: Path) -> VerifyResult:
    """Check the file against its manifest, restore it into a scratch database on the direct URL's server,
    compare tables and exact row counts with the manifest, drop the scratch database. Raises BackupInvalid on
    any difference; returns only when everything matches."""
    started = time.perf_counter()
    manifest = load_checked(Path(file))
    url = direct_url(settings)
    _check_versions(url, settings, manifest)
    scratch = _scratch_name("celora_verify")
    with _scratch_database(url, settings, scratch, purpose="verify the backup") as scratch_url:
        restored = _restore_into(settings, Path(file), manifest, scratch_url)
    return VerifyResult(file=str(file), scratch_database=scratch, tables=restored,
                        schema_revision=manifest.schema_revision, backup_created_at=manifest.created_at,
                        duration_ms=(time.perf_counter() - started) * 1000)


def restore(settings: Settings, file: Path, *, confirm: Confirm) -> RestoreResult:
    """Replace the database of the direct URL with the backup (see the module doc for how), after `confirm`."""
    started = time.perf_counter()
    manifest = load_checked(Path(file))  # before anything connects
    url = direct_url(settings)
    assert url.database is not None
    _check_versions(url, settings, manifest)
    plan = _plan(settings, url, Path(file), manifest)
    confirm(plan)
    scratch = _scratch_name(f"{url.database}_restore")
    with _scratch_database(url, settings, scratch, purpose="restore the backup", like=url.database,
                           afterwards=f"renamed to {url.database} once verified; dropped on failure") as scratch_url:
        restored = _restore_into(settings, Path(file), manifest, scratch_url)
        environment = _keep_stamps(settings, scratch_url, plan)
        with translating(url, f"the server of {url.display_host} (renaming databases)"), \
                maintenance_connection(url, settings, application_name="celora restore") as conn:
            if plan.exists:
                _copy_database_settings(conn, url.database, scratch)
                _swap(conn, url.database, scratch)
            else:
                _rename(conn, scratch, url.database)
                notice.info(f"Created the database {url.database} on {url.display_host} from the backup.")
    return RestoreResult(database=url.masked, file=str(file), tables=restored, schema_revision=manifest.schema_revision,
                         backup_created_at=manifest.created_at, replaced_tables=plan.current_tables,
                         duration_ms=(time.perf_counter() - started) * 1000, environment=environment)


def _plan(settings: Settings, url: DatabaseURL, file: Path, manifest: Manifest) -> RestorePlan:
    setting = direct_setting(settings)
    try:
        with translating(url, setting):
            conn = connect(url, settings, application_name="celora restore", autocommit=True)
    except DatabaseNotFound:  # restored as a new database; nothing in it to lose
        return RestorePlan(database=url.masked, file=str(file), backup_created_at=manifest.created_at,
                           backup_revision=manifest.schema_revision, current_tables={}, database_env=None,
                           exists=False)
    with translating(url, setting):
        try:
            refuse_pooler(conn, url, setting, "A restore (pg_restore, then renaming databases)")
            current = table_counts(conn)
            # Every schema's stamp, whatever the URL's search path: a restore replaces the whole database.
            reading = read_stamps(conn)
        finally:
            conn.close()
    if reading.explanation():
        notice.info(reading.explanation())
    return RestorePlan(database=url.masked, file=str(file), backup_created_at=manifest.created_at,
                       backup_revision=manifest.schema_revision, current_tables=current,
                       database_env=reading.environment,
                       stamps={schema: value for schema, value in reading.stamps.items() if value is not None})


def _keep_stamps(settings: Settings, scratch_url: DatabaseURL, plan: RestorePlan) -> str | None:
    """Give the restored copy the target's environment stamps (before it is swapped in, after it was verified
    against the manifest); returns the environment the database is stamped with afterwards."""
    from psycopg import sql

    with translating(scratch_url, "the restored copy"), \
            connect(scratch_url, settings, application_name="celora restore", autocommit=True) as conn:
        backup = read_stamps(conn)
        for schema, value in plan.stamps.items():
            if backup.stamps.get(schema) == value:
                continue
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            write_stamp(conn, schema, value)
            was = backup.stamps.get(schema)
            notice.info(f"The database keeps its environment stamp '{value}' ({schema}.{METADATA_TABLE}); the "
                        f"backup's was {repr(was) if was else 'none'}. To change it on purpose: "
                        f"`DELETE FROM {METADATA_TABLE} WHERE key = 'environment'`, then `celora db migrate-deploy`.")
        return read_stamps(conn).environment


def _scratch_name(prefix: str) -> str:
    suffix = f"_{int(time.time())}_{os.getpid()}"
    return prefix.encode()[: _NAME_LIMIT - len(suffix)].decode(errors="ignore") + suffix


@contextlib.contextmanager
def _scratch_database(url: DatabaseURL, settings: Settings, name: str, *, purpose: str, like: str | None = None,
                      afterwards: str = "dropped afterwards"):
    """A new, empty database `name` on url's server (announced), yielding its URL, dropped on the way out unless
    it was renamed away (swapped in) meanwhile. From template0, as pg_restore wants (objects someone added to
    template1 would collide with the dump's); with the encoding and locale of the database `like` (the one it
    will replace), which a database created with the server's defaults could lack."""
    from psycopg import sql

    with maintenance_connection(url, settings, application_name="celora restore") as conn, \
            creating(url, f"a scratch database to {purpose} into", _WITHOUT_CREATEDB):
        options = _encoding_and_locale(conn, like) if like and database_exists(conn, like) else sql.SQL("")
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)) + options)
    notice.info(f"Created the scratch database {name} on {url.display_host} to {purpose} into ({afterwards}).")
    try:
        yield with_database(url, name)
    finally:
        with contextlib.suppress(Exception), maintenance_connection(url, settings) as conn:
            drop_database(conn, name)


def _encoding_and_locale(conn, database: str):
    """` ENCODING ... LC_COLLATE ... LC_CTYPE ...` (and the ICU or builtin locale) of an existing database. The
    catalog's columns differ between versions (daticulocale in 15-16, datlocale from 17), so the row is read
    as JSON and only the keys present are used."""
    from psycopg import sql

    encoding, row = conn.execute("SELECT pg_encoding_to_char(d.encoding), to_jsonb(d) FROM pg_database d"
                                 " WHERE d.datname = %s", (database,)).fetchone()
    clause = sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Literal(encoding), sql.Literal(row["datcollate"]), sql.Literal(row["datctype"]))
    provider = row.get("datlocprovider", "c")
    locale = row.get("datlocale") or row.get("daticulocale")
    if provider == "i" and locale:
        clause += sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(locale))
    elif provider == "b" and locale:
        clause += sql.SQL(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(locale))
    return clause


def _restore_into(settings: Settings, file: Path, manifest: Manifest, scratch_url: DatabaseURL) -> dict[str, int]:
    """pg_restore into the (empty) scratch database in one transaction, then compare with the manifest. The
    client binaries are chosen for this server and this archive (tools.find_client_tools); a pg_restore newer
    than the server replays through psql (replay.py)."""
    with translating(scratch_url, "the scratch database"):
        with connect(scratch_url, settings, application_name="celora restore", autocommit=True) as conn:
            version, major = server_version(conn)
            known_settings = {row[0] for row in conn.execute("SELECT name FROM pg_catalog.pg_settings")}
    tools = find_client_tools(settings, server_major=major, archive_major=version_major(manifest.pg_dump_version),
                              needed_for=f"the archive (written by pg_dump {manifest.pg_dump_version})")
    dbname = conninfo(scratch_url, settings, application_name="celora restore")
    newer = tools.major > major
    if newer and not tools.has("psql"):
        raise ConfigError(
            f"pg_restore {tools.version} ({tools.source}: {tools.bin_dir}) is newer than the server (PostgreSQL "
            f"{version}), so celora replays its script through psql, and there is no psql beside it.",
            mismatch_hint(tools, version, settings))
    with tool_environment(scratch_url, settings) as env:
        if newer:
            notice.info(f"pg_restore {tools.version} is newer than the server (PostgreSQL {version}): restoring "
                        "through its SQL script and psql, without the session settings the server lacks.")
            result = replay.through_psql(tools.path("pg_restore"), tools.path("psql"), str(file), dbname, env,
                                         known_settings)
        else:
            result = replay.direct(tools.path("pg_restore"), str(file), dbname, env)
    if result.returncode != 0:
        raise _replay_failure(result, file, tools, version, settings)
    with translating(scratch_url, "the scratch database"):
        with connect(scratch_url, settings, application_name="celora restore", autocommit=True) as conn:
            restored = table_counts(conn)
    differences = compare(manifest.tables, restored)
    if differences:
        raise BackupInvalid(
            f"The restored copy of {file} differs from its manifest in {len(differences)} place(s): "
            f"{'; '.join(differences[:5])}. The backup does not hold what was dumped; the target was not changed.",
            "Do not rely on this backup; take a new one (`celora db backup --verify`).", differences=differences)
    return restored


def _replay_failure(result, file: Path, tools, version: str, settings: Settings) -> DatabaseError:
    detail = redact(" ".join(result.stderr.splitlines()[-6:])) or "(no output)"
    how = "pg_restore --file=- | psql" if result.through_psql else "pg_restore"
    used = f"{tools.describe().replace('pg_dump', 'pg_restore', 1)} against PostgreSQL {version}"
    message = (f"{how} could not restore {file} ({used}, exit {result.returncode}): {detail} The target database "
               "was not changed.")
    if tools.major != version_major(version):
        return DatabaseError(message + f" The client tools ({tools.major}) and the server ({version}) are of "
                             "different major versions: when the message names a setting, function or syntax the "
                             "server does not know, that is the cause.",
                             mismatch_hint(tools, version, settings) + " When it names a role or extension, "
                             "create that on this server.")
    return DatabaseError(message, "The message names what the server refused: often a role or extension the dump "
                         "needs that this server lacks (create it), or a server unlike the one the backup came from.")


def _check_versions(url: DatabaseURL, settings: Settings, manifest: Manifest) -> None:
    """A dump restores into a server of its own major version or a newer one: refused (BackupIncompatible,
    exit 3) before anything is created when this server is older than the one the backup came from."""
    with maintenance_connection(url, settings, application_name="celora restore") as conn:
        version, major = server_version(conn)
    source = version_major(manifest.server_version)
    if source > major:
        raise BackupIncompatible(
            f"The backup {manifest.file} is of PostgreSQL {manifest.server_version}, and the server of "
            f"{url.masked} runs PostgreSQL {version}: a dump restores only into a server of the same major version "
            "or a newer one (its definitions may use what the older server lacks). Nothing was restored.",
            f"Restore it on a PostgreSQL {source}+ server (e.g. `celora local start` with the embedded "
            f"PostgreSQL 18, or CELORA_PG_BIN pointing at PostgreSQL {source}'s binaries).",
            differences=[f"server_version: {version}, backup {manifest.server_version}"])


def compare(expected: dict[str, int], restored: dict[str, int]) -> list[str]:
    """Each difference between two {table: rows} maps, in words."""
    differences = [f"table {name} missing (manifest: {rows:,} rows)" for name, rows in expected.items()
                   if name not in restored]
    differences += [f"table {name} not in the manifest ({rows:,} rows)" for name, rows in restored.items()
                    if name not in expected]
    differences += [f"table {name}: {restored[name]:,} rows, manifest {rows:,}" for name, rows in expected.items()
                    if name in restored and restored[name] != rows]
    return differences


def _copy_database_settings(conn, source: str, target: str) -> None:
    """ALTER DATABASE source SET ... (for every role) carried over to the restored database."""
    from psycopg import sql

    rows = conn.execute(
        "SELECT r.rolname, s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
        " LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = %s", (source,)).fetchall()
    for role, config in rows:
        for entry in config or ():
            name, _, value = entry.partition("=")
            # List settings are stored as written (`"$user", public`); one quoted literal would be one name.
            literal = sql.SQL(value) if name in _LIST_SETTINGS else sql.Literal(value)
            statement = sql.SQL("ALTER {} DATABASE {} SET {} = {}").format(
                sql.SQL("ROLE {} IN").format(sql.Identifier(role)) if role else sql.SQL(""),
                sql.Identifier(target), sql.Identifier(name), literal)
            conn.execute(statement)


def _rename(conn, name: str, new_name: str) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(new_name)))


def _swap(conn, target: str, restored: str) -> None:
    """Rename `target` away, `restored` into its place, drop the old one. New connections to the target are
    refused while its sessions are ended (a pooler reconnects at once otherwise)."""
    from psycopg import sql

    def alter(database: str, clause: str, *args) -> None:
        conn.execute(sql.SQL("ALTER DATABASE {} " + clause).format(sql.Identifier(database), *args))

    if not database_exists(conn, target):
        raise DatabaseNotFound(f"The database {target} disappeared during the restore; nothing was swapped in.",
                               "Create it (or run the restore again).")
    old = _scratch_name(f"{target}_replaced")
    alter(target, "ALLOW_CONNECTIONS false")
    try:
        _end_sessions(conn, target, terminate_sessions)
        alter(target, "RENAME TO {}", sql.Identifier(old))
    except Exception:
        with contextlib.suppress(Exception):
            alter(target, "ALLOW_CONNECTIONS true")
        raise
    try:
        alter(restored, "RENAME TO {}", sql.Identifier(target))
    except Exception:
        with contextlib.suppress(Exception):  # put the original back
            alter(old, "RENAME TO {}", sql.Identifier(target))
            alter(target, "ALLOW_CONNECTIONS true")
        raise
    drop_database(conn, old)


def _end_sessions(conn, database: str, terminate) -> None:
    """End the other sessions and wait (up to 10 s) until they are gone: pg_terminate_backend only signals."""
    deadline = time.monotonic() + 10
    while True:
        terminate(conn, database)
        left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (database,)).fetchone()[0]
        if not left:
            return
        if time.monotonic() > deadline:
            raise DatabaseError(f"{left} session(s) on {database} did not end within 10 s; nothing was swapped in.",
                                "Stop the application's connections and run the restore again.")
        time.sleep(0.05)
