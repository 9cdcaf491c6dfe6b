"""Are two connections on the same database? Asked of the servers, never of the URLs' spelling.

`localhost` and `127.0.0.1`, a port mapping (Docker's -p, an SSH tunnel, kubectl port-forward), a unix socket, a DNS
alias or a load balancer all reach one database under different URLs: comparing URL text says "different" and
`celora db migrate` then empties the development database as its "shadow". The servers know better:

1. Identity, when the role may ask: `pg_control_system()`'s system identifier (chosen by initdb, unique per
   cluster; a physical standby shares its primary's, and a standby is the same data) and the database's oid in
   pg_database. Same identifier and same oid: the same database. PostgreSQL grants EXECUTE on
   pg_control_system() to PUBLIC, but a managed provider or an administrator may revoke it.
2. A probe, when it may not: the first connection takes a transaction-scoped advisory lock on a random 64-bit key
   and keeps its transaction open; the second tries the same lock without waiting. PostgreSQL tags an advisory
   lock with the database's oid, so the try fails exactly when both sessions are in the same database of the same
   cluster (a different database, or another server, grants it at once). Advisory locks need no privilege, work
   through a session or transaction pooler (the lock and the try each live in one transaction), and the key is
   random, so another session's lock can't answer for ours. inet_server_addr()/port and datname are not used:
   behind NAT, a tunnel or a pooler they describe the hop, not the database.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

_IDENTITY = ("SELECT (SELECT system_identifier FROM pg_control_system())::text,"
             " (SELECT oid FROM pg_database WHERE datname = current_database())::bigint, current_database()")


@dataclass(frozen=True)
class SameDatabase:
    """The answer, with how it was reached (for the message)."""

    same: bool
    evidence: str


def server_identity(conn) -> tuple[str, int, str] | None:
    """(system identifier, database oid, database name) from a psycopg connection, or None when this role may not
    call pg_control_system() (or the server has none). In a transaction of its own, so a refusal leaves the
    connection usable."""
    import psycopg

    try:
        with conn.transaction():
            row = conn.execute(_IDENTITY).fetchone()
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction):
        return None
    return str(row[0]), int(row[1]), str(row[2])


def same_database(first, second) -> SameDatabase:
    """Whether two open psycopg connections (autocommit) reach the same database."""
    one, other = server_identity(first), server_identity(second)
    if one is not None and other is not None:
        same = one[:2] == other[:2]
        verdict = "the same" if same else "not the same"
        return SameDatabase(same, f"{verdict} server system identifier and database oid "
                                  f"(pg_control_system(): {one[0]} / {other[0]}; oid {one[1]} / {other[1]})")
    return _probe(first, second)


def _probe(first, second) -> SameDatabase:
    key = secrets.randbits(63)
    with first.transaction():
        first.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        with second.transaction():
            granted = second.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()[0]
    if granted:
        return SameDatabase(False, "an advisory lock held on one connection was granted on the other "
                                   "(pg_control_system() is not permitted to this role)")
    return SameDatabase(True, "an advisory lock held on one connection was refused on the other: the same "
                              "database (pg_control_system() is not permitted to this role)")


__all__ = ["SameDatabase", "same_database", "server_identity"]
