"""The shadow database's server when the development server refuses CREATE DATABASE.

Cloud development databases often hand out a role without CREATEDB (Prisma #13275, #4571). When no
SHADOW_DATABASE_URL is set, the history is then replayed into a temporary database on celora's local PostgreSQL
(celora_cli.local: the server `celora local start` runs, started when it is not running), and that is announced:
which server, and why. When its major version differs from the development server's, the notice says what that
means: catalog output that differs between versions is normalised (celora_cli.schema.drift), but a feature that
only one of the two versions has passes or fails on the shadow differently than on the server.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from celora_cli.config.settings import DatabaseURL, Settings, parse_database_url
from celora_cli.db import admin
from celora_cli.errors import CeloraError, DatabaseError

notice = logging.getLogger("celora.notice")
SHADOW_SETTING = "SHADOW_DATABASE_URL"


@contextlib.contextmanager
def local_shadow(settings: Settings, dev_url: DatabaseURL, name: str, refusal: DatabaseError) \
        -> Iterator[DatabaseURL]:
    """A temporary database `name` on the local PostgreSQL, dropped afterwards. `refusal` is the development
    server's answer to CREATE DATABASE; when the local server cannot be used either, both causes are raised."""
    try:
        server_url = _local_server_url(settings)
        with admin.maintenance_connection(server_url, settings, application_name="celora migrate (shadow)") as conn:
            admin.create_database(conn, name, template="template0")
            local_version = _major(conn)
    except CeloraError as local_failure:
        raise _both_failed(dev_url, refusal, local_failure) from None
    shadow = admin.with_database(server_url, name, "the shadow database (local PostgreSQL)")
    notice.info(
        f"The role {dev_url.username or '(default)'} may not create databases on {dev_url.display_host} (no "
        f"CREATEDB) and {SHADOW_SETTING} is not set, so the shadow database is {name} on the local PostgreSQL "
        f"{local_version} at {server_url.display_host} (celora's own server, as `celora local start` runs it); "
        "it is dropped afterwards.")
    dev_version = _dev_major(dev_url, settings)
    if dev_version is not None and dev_version != local_version:
        notice.info(_version_notice(dev_version, local_version))
    try:
        yield shadow
    finally:
        with admin.maintenance_connection(server_url, settings, application_name="celora migrate (shadow)") as conn:
            admin.drop_database(conn, name)


def _local_server_url(settings: Settings) -> DatabaseURL:
    """The project's local server (the cluster `celora local start` manages: CELORA_LOCAL_DIR, CELORA_PG_BIN),
    started when it is not running (announced by the server itself): the shadow is part of the command asked
    for. Never for a deployed environment."""
    from celora_cli.errors import ConfigError
    from celora_cli.local.server import LocalServer

    if settings.deployed:
        raise ConfigError(f"celora starts its own local PostgreSQL only for development and test "
                          f"(CELORA_ENV={settings.env}).")
    return parse_database_url(LocalServer.from_settings(settings).ensure_running(), "the local PostgreSQL")


def _major(conn) -> int:
    row = conn.execute("SHOW server_version_num").fetchone()
    return int(row[0]) // 10000


def _dev_major(dev_url: DatabaseURL, settings: Settings) -> int | None:
    with contextlib.suppress(CeloraError):
        with admin.maintenance_connection(dev_url, settings, application_name="celora migrate (shadow)") as conn:
            return _major(conn)
    return None


def _version_notice(dev: int, local: int) -> str:
    if local > dev:
        risk = (f"a feature newer than PostgreSQL {dev} in a migration would pass on the shadow but fail on the "
                "development server (and on any server of that version)")
    else:
        risk = (f"a feature newer than PostgreSQL {local} in a migration would fail on the shadow although the "
                f"development server accepts it; set {SHADOW_SETTING} to a database on a PostgreSQL {dev} server then")
    return (f"The development server runs PostgreSQL {dev} and the local one {local}: the history is replayed on "
            f"{local}. Catalog output that differs between the versions is normalised before comparing, but "
            f"{risk}.")


def _both_failed(dev_url: DatabaseURL, refusal: DatabaseError, local_failure: CeloraError) -> DatabaseError:
    because = " ".join(filter(None, [local_failure.message, local_failure.hint]))
    return DatabaseError(
        f"No shadow database could be created: {refusal.message} The local PostgreSQL, celora's stand-in for "
        f"that case, could not be used either: {because}",
        f"Set {SHADOW_SETTING} to a database of its own that celora may empty, or grant the role CREATEDB "
        f"(`ALTER ROLE {dev_url.username or 'your_role'} CREATEDB`).",
        sqlstate=refusal.sqlstate)
