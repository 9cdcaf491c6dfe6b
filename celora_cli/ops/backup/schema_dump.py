"""The schema of a database as SQL: `pg_dump --schema-only`, for `celora db squash` (celora_cli.schema.squash).

pg_dump prints everything a history can create (enum types, functions with their SECURITY DEFINER and pinned
search_path, triggers, comments, grants) in an order that applies, with the DROP statements that undo it
(--clean --if-exists). Ownership is left out (--no-owner: the squash runs as whoever runs the migrations), and so
are celora's and Alembic's bookkeeping tables (`exclude`). The same client-tool choice and secret handling as
`celora db backup` (celora_cli.ops.backup.tools): the password goes through a 0600 passfile, never argv.
"""

from __future__ import annotations

import signal

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import connect
from celora_cli.db.errors import translating
from celora_cli.errors import DatabaseError, Interrupted
from celora_cli.ops.backup.catalog import server_version
from celora_cli.ops.backup.tools import (
    conninfo,
    find_client_tools,
    run_tool,
    stderr_tail,
    tool_environment,
)


def schema_sql(url: DatabaseURL, settings: Settings, *, exclude: tuple[str, ...] = (),
               setting: str = "the shadow database") -> str:
    """pg_dump --schema-only --clean --if-exists --no-owner of `url`, tables named in `exclude` left out."""
    with translating(url, setting), connect(url, settings, application_name="celora squash (dump)") as conn:
        version, major = server_version(conn)
    tools = find_client_tools(settings, server_major=major, needed_for=f"the server (PostgreSQL {version})")
    args = [tools.path("pg_dump"), "--schema-only", "--no-owner", "--clean", "--if-exists", "--no-password",
            "--no-publications", "--no-subscriptions", "--no-security-labels", "--no-tablespaces",
            *(f"--exclude-table={table}" for table in exclude),
            f"--dbname={conninfo(url, settings, application_name='celora squash')}"]
    with tool_environment(url, settings) as env:
        result = run_tool(args, env)
    if result.returncode == -signal.SIGINT:
        raise Interrupted("pg_dump was interrupted; nothing was written.")
    if result.returncode != 0:
        raise DatabaseError(f"pg_dump --schema-only failed ({tools.describe()} against PostgreSQL {version}, exit "
                            f"{result.returncode}): {stderr_tail(result)}",
                            "Check the server log; CELORA_PG_BIN chooses the client tools.")
    return result.stdout
