"""Starting the local PostgreSQL is a step a command takes, never a side effect of working out a URL.

When no DATABASE_URL is set, celora uses its own local server. A command that uses the database grants itself
the right to start that server (`allowing_start`, called once per invocation: by the CLI when it loads the
settings, by the library's entry points when they load their own); the server is then initialised and started
on first use, after the command's own checks, and the start is announced on stderr (the `celora.notice`
lines of LocalServer: "Creating a local PostgreSQL cluster ...", "Starting the local PostgreSQL ..."). Without
that grant (settings built by hand, `db health`, `db metrics`) working out the URL only asks whether the server
runs and says how to start it when it does not.
"""

from __future__ import annotations

from celora_cli.config.settings import (  # noqa: F401 - allowing_start: the grant lives in config, read here
    LOCAL_SETTING,
    DatabaseURL,
    Settings,
    allowing_start,
    parse_database_url,
)
from celora_cli.errors import ConfigError


def local_database_url(settings: Settings, *, start: bool) -> DatabaseURL:
    """The local server's URL (its `.setting` is LOCAL_SETTING). start=True initialises and starts it when it
    is not running (announced); start=False raises LocalServerError when it is not running."""
    if settings.deployed:
        # A deploy with a missing DATABASE_URL must fail, not migrate a fresh local database and pass.
        raise ConfigError(
            f"DATABASE_URL is not set (CELORA_ENV={settings.env}). celora starts its own local PostgreSQL "
            "only for development and test.",
            "Set DATABASE_URL (and DIRECT_DATABASE_URL when it goes through PgBouncer) in the environment "
            "or pass --env-file.",
        )
    from celora_cli.local.server import LocalServer  # subprocess, locks: only when there is no DATABASE_URL

    server = LocalServer.from_settings(settings)  # validates CELORA_PG_USER / CELORA_LOCAL_DIR first
    raw = server.ensure_running() if start else server.running_url()
    return parse_database_url(raw, LOCAL_SETTING)
