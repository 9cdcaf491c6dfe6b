"""Volume: N generated users with wallets, transactions and notifications, streamed to PostgreSQL with COPY.

The rows come from data/seed/volume_rows.py (deterministic: the same seed gives identical rows). They are
written as COPY text, one table at a time in dependency order, and nothing is kept per row (peak RSS measured:
67 MB for 2,000 and for 20,000 users). Text rather than binary COPY: measured here on 387,000 transaction rows,
binary COPY with write_row() was within noise of this (10.3-12.3 s against 10.5-14.8 s), because the server's
index and foreign-key work is the bottleneck, and text needs no dumpers registered for the enum types.

A second run with the same seed would insert the same users again: it is refused before anything is written
(Refused, naming the seed), whatever the number of users, because the first user of a seed is always the same.

The function runs inside the caller's transaction and never commits: the caller commits, so an interruption
leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from psycopg.pq import TransactionStatus

from celora_cli.data.seed.volume_rows import (
    BASE_TIME,
    NOTIFICATION_COLUMNS,
    TABLES,
    TRANSACTION_COLUMNS,
    USER_COLUMNS,
    WALLET_COLUMNS,
    Keyed,
    Pools,
    Timestamps,
    build_pools,
    email,
    firebase_uid,
    notification_rows,
    plan,
    planned_counts,
    transaction_rows,
    user_rows,
    wallet_rows,
)
from celora_cli.errors import InternalError, Refused, UsageError

ProgressCallback = Callable[[str, int, int], None]

PROGRESS_EVERY = 10_000  # rows between progress() calls
FLUSH_EVERY = 1_000  # rows per copy.write(): big enough to amortise the call, small enough to stay flat


def _first_user_exists(conn, seed: int, pools: Pools) -> str | None:
    """The email of this seed's first user when a previous run left it in the database, else None."""
    first = next(plan(seed, 1))
    address_ = email(pools, seed, first)
    row = conn.execute(
        "SELECT email FROM users WHERE id = %s OR firebase_uid = %s OR lower(email) = %s LIMIT 1",
        (first.id, firebase_uid(Keyed(seed, "firebase_uid"), 0), address_),
    ).fetchone()
    return None if row is None else (row[0] or address_)


def _check_transaction(conn) -> None:
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        # Each COPY would commit on its own, and an interruption would leave some tables written.
        raise InternalError(
            "generate_volume() needs a transaction: the connection is in autocommit mode outside one.",
            "Call it inside `with conn.transaction():` or on a connection with autocommit=False.",
        )


# The audit log (migration 20261126170000) records every row change through triggers; generated rows are
# nobody's change and auditing them would double the volume's writes. Skipping is explicit and transaction-local
# (SET LOCAL celora.audit = 'off'), and only for a role that owns the tables: the database refuses the request
# from anyone else, so a non-owner's volume is audited rather than refused.
_MAY_SKIP_AUDIT = ("SELECT coalesce(bool_and(pg_has_role(current_user, relowner, 'MEMBER')), false) FROM pg_class "
                   "WHERE oid = ANY(%s::regclass[])")


def _skip_audit(conn) -> bool:
    if not conn.execute(_MAY_SKIP_AUDIT, (list(TABLES),)).fetchone()[0]:
        return False
    conn.execute("SELECT set_config('celora.audit', 'off', true)")
    return True


def _stream(conn, table: str, columns: tuple[str, ...], rows: Iterator[str], total: int,
            progress: ProgressCallback | None) -> int:
    done = 0
    if progress:
        progress(table, 0, total)
    buffer: list[str] = []
    with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            buffer.append(row)
            if len(buffer) == FLUSH_EVERY:
                copy.write("".join(buffer))
                buffer.clear()
                done += FLUSH_EVERY
                if progress and done % PROGRESS_EVERY == 0:
                    progress(table, done, total)
        if buffer:
            copy.write("".join(buffer))
            done += len(buffer)
    if progress:
        progress(table, done, total)
    return done


def generate_volume(conn, *, users: int, seed: int, progress: ProgressCallback | None = None) -> dict[str, int]:
    """Insert `users` generated users with their wallets, transactions and notifications; rows per table.

    `conn` is a psycopg 3 connection on a migrated database, inside a transaction the caller commits (or
    rolls back): nothing is committed here. `progress(table, done, total)` is called as each table streams.
    Raises Refused when this seed's users are already in the database (a second run with the same seed).
    """
    if isinstance(users, bool) or not isinstance(users, int) or users < 0:
        raise UsageError(f"The number of users to generate must be a whole number >= 0 (got {users!r}).",
                         "Pass --users N with N >= 0.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"The seed must be a whole number (got {seed!r}).", "Pass --seed S with an integer S.")
    _check_transaction(conn)
    counts = dict.fromkeys(TABLES, 0)
    if users == 0:
        return counts
    pools = build_pools(seed)
    existing = _first_user_exists(conn, seed, pools)
    if existing is not None:
        raise Refused(
            f"Volume seed {seed} is already loaded in this database (its first user, {existing}, exists); "
            "loading it again would duplicate its users. No generated row was written.",
            "Pick another --seed (each seed adds its own users), or reset the database before reloading this one.",
        )
    totals = planned_counts(users=users, seed=seed)
    ts = Timestamps()
    auditing_skipped = _skip_audit(conn)
    counts["users"] = _stream(conn, "users", USER_COLUMNS, user_rows(seed, users, pools, ts),
                              totals["users"], progress)
    counts["wallets"] = _stream(conn, "wallets", WALLET_COLUMNS, wallet_rows(seed, users, ts),
                                totals["wallets"], progress)
    counts["transactions"] = _stream(conn, "transactions", TRANSACTION_COLUMNS, transaction_rows(seed, users, ts),
                                     totals["transactions"], progress)
    counts["notifications"] = _stream(conn, "notifications", NOTIFICATION_COLUMNS,
                                      notification_rows(seed, users, pools, ts), totals["notifications"], progress)
    if auditing_skipped:
        # Only this function's COPYs: the caller's later statements in the same transaction are audited again.
        # (On an error nothing needs resetting: the transaction is rolled back, and SET LOCAL with it.)
        conn.execute("SELECT set_config('celora.audit', '', true)")
    return counts



# What callers import from here: the entry point, and what they need to plan or check a run.
__all__ = ["BASE_TIME", "NOTIFICATION_COLUMNS", "TABLES", "TRANSACTION_COLUMNS", "USER_COLUMNS", "WALLET_COLUMNS",
           "ProgressCallback", "generate_volume", "planned_counts"]
