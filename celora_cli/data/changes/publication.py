"""The publication a slot decodes through: what it sends, checked table by table and column by column.

What the column lists do not do (COLUMN_LISTS_LIMITS, printed by `--setup-only`): they filter what a reader of
*this* publication receives. A role with REPLICATION can create its own slot with any output plugin
(test_decoding, wal2json) and decode every column of every table from the WAL, SELECT privileges or not. So an
existing publication is checked column by column before it is called filtered (`publication_check`), and
`--setup-only` refuses one that sends a secret column unless --allow-secret-columns accepts it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from celora_cli.errors import ConfigError, Refused

notice = logging.getLogger("celora.notice")

PUBLICATION_COMMENT = "celora db changes"
SECRETS_FLAG = "--allow-secret-columns"
COLUMN_LISTS_LIMITS = (
    "What the column lists protect: a reader of this publication (Debezium, `celora db changes`) never receives the "
    "secret columns; PostgreSQL leaves them out before the change leaves the server. What they do not: any role "
    "with REPLICATION can create its own slot with another output plugin (test_decoding, wal2json) and decode "
    "every column of every table from the WAL, whatever its SELECT grants, including the role below. So: give "
    "REPLICATION only to consumers you trust as much as the database owner; let other consumers read from a "
    "trusted relay (Debezium into Kafka with topic ACLs, or a service) instead of the database; keep secrets out of "
    "the database, or store them hashed or encrypted at rest in their columns (sessions.token_hash is a hash), so "
    "the WAL holds nothing usable.")


@dataclass
class PublicationCheck:
    """What a publication sends, table by table and column by column, against what the stream needs."""

    name: str
    exists: bool
    column_lists: bool  # the server can filter columns (PostgreSQL 15+)
    secrets: dict[str, list[str]] = field(default_factory=dict)  # secret columns it sends, by table
    missing: list[str] = field(default_factory=list)  # streamed tables it does not publish
    others: list[str] = field(default_factory=list)  # tables it publishes that celora does not stream

    def secrets_text(self) -> str:
        return ", ".join(f"{table}.{column}" for table, cols in self.secrets.items() for column in cols)


def publication_check(conn, name: str, tables: list[str], excluded: dict[str, tuple[str, ...]]) -> PublicationCheck:
    """Read what publication `name` publishes (pg_publication_tables: its attnames on PostgreSQL 15+; before 15
    there are no column lists, so every column of a published table is sent). A table of another schema than
    the search path's counts as another table."""
    column_lists = conn.info.server_version >= 150000
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone() is not None
    check = PublicationCheck(name, exists, column_lists)
    if not exists:
        return check
    columns = "attnames::text[]" if column_lists else "NULL::text[]"
    published: dict[str, list[str] | None] = {}
    for schema, table, attnames, ours in conn.execute(
            f"SELECT schemaname::text, tablename::text, {columns}, schemaname = ANY (current_schemas(false))"
            " FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2", (name,)):
        if ours and table in tables:
            published[table] = attnames
        else:
            check.others.append(f"{schema}.{table}")
    check.missing = [t for t in tables if t not in published]
    for table, attnames in published.items():
        sent = [c for c in excluded.get(table, ()) if attnames is None or c in attnames]
        if sent:
            check.secrets[table] = sent
    return check


def publish_clause(tables: list[str], excluded: dict[str, tuple[str, ...]], columns: dict[str, list[str]],
                   column_lists: bool):
    """`users, sessions (id, user_id, ...), ...`: each table, with the columns kept when it has secrets."""
    parts = []
    for table in tables:
        part: Any = sql.Identifier(table)
        if column_lists and excluded.get(table):
            kept = [c for c in columns[table] if c not in excluded[table]]
            part = sql.SQL("{} ({})").format(part, sql.SQL(", ").join(map(sql.Identifier, kept)))
        parts.append(part)
    return sql.SQL(", ").join(parts)


def _secrets_refused(check: PublicationCheck, tables: list[str], excluded: dict[str, tuple[str, ...]],
                     columns: dict[str, list[str]], where: str) -> Refused:
    """--setup-only on a publication that would send secret columns to its readers."""
    what = f"Publication {check.name}" + (" (it exists)" if check.exists else " (as it would be created)")
    if check.column_lists:
        clause = publish_clause(tables, excluded, columns, True).as_string(None)
        fix = (f"As the tables' owner, make it leave them out: `ALTER PUBLICATION "
               f"{sql.Identifier(check.name).as_string(None)} SET TABLE {clause}`; or drop it (`DROP PUBLICATION "
               f"{check.name}`) and let `celora db changes --setup-only` create it")
    else:
        fix = ("PostgreSQL before 15 has no column lists, so no publication can leave a column out: upgrade to 15+ "
               "to filter on the server (Debezium's column.exclude.list drops them only in the connector, after "
               "they left the server)")
    return Refused(
        f"{what} on {where} sends secret columns to every reader of the slot (Debezium, or anything with "
        f"REPLICATION that reads it): {check.secrets_text()} (the models mark them info={{'sensitive': True}}). "
        "Nothing was created.",
        f"{fix}; or accept it with `celora db changes --setup-only {SECRETS_FLAG}`.")


def ensure_publication(conn, name: str, tables: list[str], excluded: dict[str, tuple[str, ...]],
                       columns: dict[str, list[str]], *, where: str = "the server",
                       refuse_secrets: bool = False) -> tuple[bool, PublicationCheck]:
    """(created, what it publishes). An existing publication is used as it is, after its tables and columns are
    checked. refuse_secrets (--setup-only without --allow-secret-columns): a publication that sends a secret
    column is refused (Refused), before anything is created. The stream itself leaves secret columns out of its
    lines whatever the publication sends, so for it they are only named (a notice)."""
    check = publication_check(conn, name, tables, excluded)
    if not check.exists and not check.column_lists:  # what a new one would send: every column
        check.secrets = {t: list(excluded[t]) for t in tables if excluded.get(t)}
    if check.secrets and refuse_secrets:
        raise _secrets_refused(check, tables, excluded, columns, where)
    if check.exists:
        if check.missing:  # e.g. a table added by a later migration: its changes never reach this slot
            notice.info(f"Publication {name} does not publish {', '.join(check.missing)}: no change to "
                        f"{'it' if len(check.missing) == 1 else 'them'} is streamed. Add with `ALTER PUBLICATION "
                        f"{name} ADD TABLE {', '.join(check.missing)}` (as the tables' owner).")
        if check.others:
            notice.info(f"Publication {name} also publishes {', '.join(check.others)}, which celora does not "
                        f"stream: every reader of the slot receives their changes.")
        if check.secrets and check.column_lists:  # before 15 it is how every publication is (said at creation)
            notice.info(f"Publication {name} sends secret columns ({check.secrets_text()}) to every reader of the "
                        f"slot; this stream leaves them out of its lines. `celora db changes --setup-only --slot "
                        f"{name}` says how to filter them on the server.")
        return False, check
    try:
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(name), publish_clause(tables, excluded, columns, check.column_lists)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(
            f"Publication {name} does not exist yet and this role may not create it: {exc.diag.message_primary} "
            "(a publication for a table needs the table's owner).",
            f"Run `celora db changes --setup-only --slot {name}` once as the migration role (the tables' owner); "
            "the stream then works as any role with REPLICATION.") from exc
    conn.execute(sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(sql.Identifier(name),
                                                                   sql.Literal(PUBLICATION_COMMENT)))
    notice.info(f"Created publication {name} for {', '.join(tables)} (secrets excluded"
                f"{'' if check.column_lists else ' by celora only: PostgreSQL < 15 has no column lists'}).")
    return True, check

