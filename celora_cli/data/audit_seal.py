"""Tamper evidence for the audit log: `celora db audit --seal` and `--verify`.

Access control keeps the app out of audit_log; its owner can still edit history. A seal is a link in a hash chain
(table audit_seal, owned by the migration role, no privilege for anyone else): the SHA-256 of the previous link's
hash, the range (after_id, last_id] and the digests of every entry in it, in id order. `--verify` recomputes each
link from the live rows and names the first entry changed, removed, or inserted into a sealed range afterwards.
The chain is evidence only as far as its newest hash is kept somewhere the owner cannot rewrite: the seal prints
it; record it outside the database (a CI log, a ticket).

Writers never wait for a seal (no lock per insert; the hash is computed at seal time). The one care is the
horizon: ids are handed out when a row is inserted but become visible when its transaction commits, so a
transaction still open could commit an id lower than the highest visible one. The seal reads the sequence's last
value L *first*, then takes a snapshot: every id <= L was handed to a transaction that already had its xid (the
audited write came first), so each is finished or listed in the snapshot as running. The seal waits (bounded)
for the listed ones to end, then hashes ids <= L: nothing can appear below L afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from celora_cli.config.settings import Settings, setting_name
from celora_cli.db.connect import connect, direct_url
from celora_cli.db.errors import translating
from celora_cli.errors import AuditTampered, ConfigError, DatabaseError, LockTimeout, SchemaNotMigrated

SEAL_WAIT_SECONDS = 60.0
_SHORT = 8  # bytes of each entry's digest stored in the seal: enough to name the entry, the link hash covers all
# An entry's canonical form: every column, times in UTC with microseconds, JSON as jsonb prints it (normalised).
_DIGESTS = """
SELECT id, sha256(convert_to(jsonb_build_array(
           id, to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), table_name, operation, row_key,
           old_values, new_values, actor, db_role, application_name, transaction_id)::text, 'UTF8'))
  FROM audit_log WHERE id > %s AND id <= %s ORDER BY id
"""


@dataclass
class SealResult:
    database: str
    seal_id: int | None  # None: nothing new to seal
    after_id: int
    last_id: int
    entries: int
    hash: str  # hex; record it outside the database
    waited_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"database": self.database, "seal_id": self.seal_id, "after_id": self.after_id,
                "last_id": self.last_id, "entries": self.entries, "hash": self.hash,
                "waited_s": round(self.waited_s, 3)}


@dataclass(frozen=True)
class Problem:
    seal_id: int
    entry_id: int | None
    problem: str  # changed, removed, inserted, seal_changed, chain_broken

    def describe(self) -> str:
        if self.entry_id is None:
            return {"seal_changed": f"seal #{self.seal_id} itself was changed (its hash does not match its contents)",
                    "chain_broken": f"seal #{self.seal_id} does not chain to the seal before it (a seal was removed "
                                    "or rewritten)"}[self.problem]
        return {"changed": f"entry {self.entry_id} was changed after seal #{self.seal_id}",
                "removed": f"entry {self.entry_id} was removed after seal #{self.seal_id}",
                "inserted": f"entry {self.entry_id} was inserted into the range of seal #{self.seal_id} after it was "
                            "sealed"}[self.problem]

    def to_json(self) -> dict[str, Any]:
        return {"seal_id": self.seal_id, "entry_id": self.entry_id, "problem": self.problem,
                "description": self.describe()}


@dataclass
class VerifyResult:
    database: str
    seals: int = 0
    entries: int = 0  # sealed entries checked
    unsealed: int = 0  # entries after the last seal
    last_hash: str | None = None
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"database": self.database, "seals": self.seals, "entries": self.entries, "unsealed": self.unsealed,
                "last_hash": self.last_hash, "problems": [p.to_json() for p in self.problems]}


def _link_hash(previous: bytes | None, kind: str, after_id: int, last_id: int, entries: int,
               digests: list[tuple[int, bytes]]) -> bytes:
    link = hashlib.sha256()
    link.update(previous or b"")
    link.update(f"{kind}|{after_id}|{last_id}|{entries}|".encode())
    for entry_id, digest in digests:
        link.update(entry_id.to_bytes(8, "big", signed=True))
        link.update(digest)
    return link.digest()


def _short(digests: list[tuple[int, bytes]]) -> bytes:
    return b"".join(entry_id.to_bytes(8, "big", signed=True) + digest[:_SHORT] for entry_id, digest in digests)


def _unpack(blob: bytes) -> list[tuple[int, bytes]]:
    step = 8 + _SHORT
    return [(int.from_bytes(blob[i:i + 8], "big", signed=True), blob[i + 8:i + step])
            for i in range(0, len(blob), step)]


def _open(settings: Settings):
    """The direct URL: sealing needs the owner's rights (the app holds none on audit_log or audit_seal)."""
    url = direct_url(settings)
    setting = setting_name(settings)
    with translating(url, setting):
        conn = connect(url, settings, application_name="celora db audit", autocommit=False)
    return conn, url, setting


@contextlib.contextmanager
def _as_owner(setting: str, url) -> Iterator[None]:
    """A role without access gets told which role has it, not just PostgreSQL's "permission denied"."""
    import psycopg

    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            f"The role of {setting} ({url.username or 'default'}) may not seal or verify the audit log: "
            f"{str(exc).splitlines()[0]}.",
            "Only the migration role (the owner of audit_log and audit_seal) may: set DIRECT_DATABASE_URL to it.",
            sqlstate="42501") from exc


def _require_table(conn) -> None:
    if conn.execute("SELECT to_regclass('audit_seal')").fetchone()[0] is None:
        raise ConfigError("This database has no audit_seal table: migration 20261207023000 is not applied.",
                          "Apply the migrations: `celora db migrate-deploy`.")


def _last_link(conn) -> tuple[int, bytes | None]:
    row = conn.execute("SELECT last_id, hash FROM audit_seal ORDER BY id DESC LIMIT 1").fetchone()
    return (row[0], bytes(row[1])) if row else (0, None)


def seal(settings: Settings, *, wait_seconds: float = SEAL_WAIT_SECONDS) -> SealResult:
    """Append a link covering the entries since the last one, up to the safe horizon."""
    conn, url, setting = _open(settings)
    try:
        with translating(url, setting), _as_owner(setting, url):
            _require_table(conn)
            # One sealer at a time (writers of audit_log never touch audit_seal, so they are not held).
            conn.execute("LOCK TABLE audit_seal IN EXCLUSIVE MODE")
            after_id, previous = _last_link(conn)
            horizon = conn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM "
                                   + _sequence(conn)).fetchone()[0]
            snapshot = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
            waited = _wait_for(conn, snapshot, wait_seconds)
            if horizon <= after_id:
                conn.rollback()
                return SealResult(url.masked, None, after_id, after_id, 0, (previous or b"").hex(), waited)
            digests = [(row[0], bytes(row[1])) for row in conn.execute(_DIGESTS, (after_id, horizon))]
            link = _link_hash(previous, "seal", after_id, horizon, len(digests), digests)
            seal_id = conn.execute(
                "INSERT INTO audit_seal (sealed_by, kind, after_id, last_id, entries, digests, previous_hash, hash) "
                "VALUES (session_user, 'seal', %s, %s, %s, %s, %s, %s) RETURNING id",
                (after_id, horizon, len(digests), _short(digests), previous, link)).fetchone()[0]
            conn.commit()
            return SealResult(url.masked, seal_id, after_id, horizon, len(digests), link.hex(), waited)
    finally:
        conn.close()


def _sequence(conn) -> str:
    name = conn.execute("SELECT pg_get_serial_sequence('audit_log', 'id')").fetchone()[0]
    if name is None:
        raise SchemaNotMigrated("audit_log.id has no sequence (audit_log is not the one migration 20261126170000 "
                                "made).", "Restore audit_log from the migrations: `celora db migrate-deploy`.")
    return name


def _wait_for(conn, snapshot: str, wait_seconds: float) -> float:
    """Wait until every transaction running at `snapshot` has ended; raise naming them after wait_seconds."""
    started = time.monotonic()
    while True:
        running = conn.execute(
            "SELECT x::text FROM pg_snapshot_xip(%s::pg_snapshot) x "
            "WHERE pg_xact_status(x) = 'in progress'", (snapshot,)).fetchall()
        if not running:
            return time.monotonic() - started
        if time.monotonic() - started >= wait_seconds:
            sessions = conn.execute(
                "SELECT pid, coalesce(application_name, ''), state, now() - xact_start FROM pg_stat_activity "
                "WHERE backend_xid::text = ANY(%s)", ([r[0] for r in running],)).fetchall()
            named = "; ".join(f"pid {pid} ({app or 'no application_name'}, {state}, open {age})"
                              for pid, app, state, age in sessions) or f"{len(running)} transaction(s)"
            conn.rollback()
            raise LockTimeout(
                f"Not sealed: transactions that may still commit audit entries below the horizon stayed open for "
                f"{wait_seconds:g} s: {named}. Sealing now could leave them outside every seal.",
                "Seal again when they have ended (an idle-in-transaction session may need "
                "pg_terminate_backend).")
        time.sleep(0.2)


def record_prune(conn, pruned_through: int, deleted: int) -> None:
    """A retention sweep is a link too: entries up to `pruned_through` may be missing from then on. Called by
    audit.prune in its own transaction; a database without audit_seal (before 20261207023000) records nothing."""
    if conn.execute("SELECT to_regclass('audit_seal')").fetchone()[0] is None:
        return
    conn.execute("LOCK TABLE audit_seal IN EXCLUSIVE MODE")
    after_id, previous = _last_link(conn)
    if after_id == 0 and previous is None:
        return  # nothing sealed yet: nothing that could miss the rows
    last_id = max(after_id, pruned_through)
    link = _link_hash(previous, "prune", after_id, last_id, deleted, [])
    conn.execute("INSERT INTO audit_seal (sealed_by, kind, after_id, last_id, entries, digests, previous_hash, hash) "
                 "VALUES (session_user, 'prune', %s, %s, %s, '', %s, %s)",
                 (after_id, last_id, deleted, previous, link))


def verify(settings: Settings) -> VerifyResult:
    """Recompute every link; raise AuditTampered naming the first problem (all of them in its details)."""
    conn, url, setting = _open(settings)
    result = VerifyResult(url.masked)
    try:
        with translating(url, setting), _as_owner(setting, url):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # one view of it all
            _require_table(conn)
            previous: bytes | None = None
            links = conn.execute("SELECT id, kind, after_id, last_id, entries, digests, previous_hash, hash "
                                 "FROM audit_seal ORDER BY id").fetchall()
            # A retention sweep anywhere in the chain excuses the entries up to its id missing in earlier seals.
            pruned_through = max((link[3] for link in links if link[1] == "prune"), default=0)
            for seal_id, kind, after_id, last_id, entries, blob, previous_hash, stored in links:
                result.seals += 1
                stored = bytes(stored)
                if (bytes(previous_hash) if previous_hash is not None else None) != previous:
                    result.problems.append(Problem(seal_id, None, "chain_broken"))
                if kind == "prune":
                    if _link_hash(previous, kind, after_id, last_id, entries, []) != stored:
                        result.problems.append(Problem(seal_id, None, "seal_changed"))
                else:
                    result.entries += entries
                    _check_link(conn, result, seal_id, previous, after_id, last_id, entries, bytes(blob), stored,
                                pruned_through)
                previous = stored
            result.last_hash = previous.hex() if previous else None
            last = links[-1][3] if links else 0
            result.unsealed = conn.execute("SELECT count(*) FROM audit_log WHERE id > %s", (last,)).fetchone()[0]
            conn.rollback()
    finally:
        conn.close()
    if result.problems:
        first = result.problems[0]
        raise AuditTampered(
            f"The audit log does not match its seals: {first.describe()}"
            + (f" (and {len(result.problems) - 1} more problem(s))" if len(result.problems) > 1 else "") + ".",
            "Compare with a backup to see what was there; the entry ids and seals are listed with --json. Record "
            "each seal's hash outside the database: whoever can edit the log can also rewrite its seals.",
            problems=result.problems)
    return result


def _check_link(conn, result: VerifyResult, seal_id: int, previous: bytes | None, after_id: int, last_id: int,
                entries: int, blob: bytes, stored: bytes, pruned_through: int) -> None:
    live = [(row[0], bytes(row[1])) for row in conn.execute(_DIGESTS, (after_id, last_id))]
    sealed = _unpack(blob)
    live_by_id = dict(live)
    sealed_ids = {entry_id for entry_id, _ in sealed}
    found: list[Problem] = []
    for entry_id, short in sealed:
        digest = live_by_id.get(entry_id)
        if digest is None:
            if entry_id > pruned_through:
                found.append(Problem(seal_id, entry_id, "removed"))
        elif digest[:_SHORT] != short:
            found.append(Problem(seal_id, entry_id, "changed"))
    found += [Problem(seal_id, entry_id, "inserted") for entry_id, _ in live if entry_id not in sealed_ids]
    found.sort(key=lambda p: p.entry_id or 0)
    result.problems.extend(found)
    complete = len(live) == entries and not found
    if complete and _link_hash(previous, "seal", after_id, last_id, entries, live) != stored:
        result.problems.append(Problem(seal_id, None, "seal_changed"))
    elif not found and len(sealed) != entries:
        result.problems.append(Problem(seal_id, None, "seal_changed"))


__all__ = ["Problem", "SealResult", "VerifyResult", "record_prune", "seal", "verify"]
