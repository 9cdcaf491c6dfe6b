"""The studio's SQL console: one statement at a time, in a READ ONLY transaction (unless the studio is writable and
the statement is a write), under its own statement timeout, its rows read a page at a time.

What it promises, and what it does not:
- read-only studio: every statement runs in a READ ONLY transaction, so PostgreSQL refuses any write (a function
  that writes, a data-modifying WITH); a statement that is a write by its first word is refused before it is sent
  (403). The word check is a courtesy that gives a clear message; the transaction is the enforcement.
- writable studio (the guard of `celora db studio --writable` already ran): INSERT, UPDATE, DELETE and MERGE are
  committed; reads still run READ ONLY. Schema changes, transaction control and session settings are refused in
  every mode: they belong in a migration, or would leak onto a pooled server connection other clients reuse.
- one statement: psycopg sends it with the extended protocol, which refuses a second one ("cannot insert multiple
  commands into a prepared statement").
- reads are paged with a server-side cursor (DECLARE, MOVE, FETCH): a SELECT over a million rows holds one page in
  memory, never the result. A page starts at most MAX_OFFSET rows in.
- the console is as strong as the studio's role: it reads whatever that role may read. Values of the columns the
  models call sensitive are masked when a result column carries their name (an alias gets past that: run the
  studio as a read-only login, `celora db roles`, where that matters).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import Response
from starlette_admin.routing import route
from starlette_admin.views import CustomView

DEFAULT_TIMEOUT = 5.0  # seconds; CELORA_STUDIO_CONSOLE_TIMEOUT
PAGE_SIZES = (25, 50, 100, 200, 500)
DEFAULT_PAGE_SIZE = 50
MAX_OFFSET = 10_000  # MOVE reads and throws away every row before the page, as OFFSET does
MAX_STATEMENT_BYTES = 100_000
MAX_CELL_CHARS = 2_000  # a cell longer than this is cut (and says so): a page must stay a page
MASK = "•••• (sensitive)"
CURSOR = "celora_console"

READS = frozenset({"select", "with", "values", "table", "("})  # paged through a cursor
PLAIN_READS = frozenset({"explain", "show"})  # no cursor for these: their results are small
WRITES = frozenset({"insert", "update", "delete", "merge"})
REFUSED = {
    **dict.fromkeys(("begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release", "prepare",
                     "set", "reset", "discard", "listen", "unlisten", "load", "lock"),
                    "Transaction control and session settings are not run from the console: each statement runs in "
                    "a transaction of its own, and a session setting would stay on a pooled server connection."),
    **dict.fromkeys(("create", "alter", "drop", "truncate", "grant", "revoke", "comment", "reindex", "cluster",
                     "vacuum", "refresh", "security", "import", "analyze", "copy", "do", "call", "checkpoint"),
                    "Schema changes and maintenance are not run from the console: write a migration "
                    "(`celora db migrate`) or use psql as the migration role."),
}


class ConsoleRefusal(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class ConsoleResult:
    statement: str
    kind: str  # "read" or "write"
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    offset: int = 0
    page_size: int = DEFAULT_PAGE_SIZE
    has_more: bool = False
    rowcount: int | None = None  # rows a write changed
    status: str = ""  # PostgreSQL's command tag, e.g. "UPDATE 3"
    elapsed_ms: float = 0.0
    masked: list[str] = field(default_factory=list)  # result columns whose values were masked

    @property
    def first_row(self) -> int:
        return self.offset + 1 if self.rows else 0

    @property
    def last_row(self) -> int:
        return self.offset + len(self.rows)


def first_word(statement: str) -> str:
    """The statement's first keyword (lower case), comments and whitespace skipped; "(" for a parenthesised query."""
    text = statement
    while True:
        text = text.lstrip()
        if text.startswith("--"):
            newline = text.find("\n")
            text = "" if newline < 0 else text[newline + 1:]
        elif text.startswith("/*"):
            text = _after_block_comment(text)
        else:
            break
    if text.startswith("("):
        return "("
    match = re.match(r"[A-Za-z_]+", text)
    return match.group(0).lower() if match else ""


def _after_block_comment(text: str) -> str:
    depth, i = 0, 0  # PostgreSQL's block comments nest
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return text[i:]
        else:
            i += 1
    return ""


def classify(statement: str, *, writable: bool) -> str:
    """"read", "plain" (a read without a cursor) or "write"; raises ConsoleRefusal with the reason otherwise."""
    if not statement.strip():
        raise ConsoleRefusal("Type a statement first (one SELECT, for instance).")
    if len(statement.encode("utf-8", "surrogatepass")) > MAX_STATEMENT_BYTES:
        raise ConsoleRefusal(f"The statement is longer than {MAX_STATEMENT_BYTES:,} bytes.")
    word = first_word(statement)
    if word in READS:
        return "read"
    if word in PLAIN_READS:
        return "plain"
    if word in WRITES:
        if not writable:
            raise ConsoleRefusal(f"{word.upper()} refused: the studio runs read-only (--read-only, the default on "
                                 "production), so the console only reads. Restart it with --writable to change "
                                 "data.", status=403)
        return "write"
    if word in REFUSED:
        raise ConsoleRefusal(f"{word.upper()} refused. {REFUSED[word]}", status=403)
    raise ConsoleRefusal(f"The console runs SELECT, WITH, VALUES, TABLE, EXPLAIN and SHOW"
                         f"{' and, writable, INSERT, UPDATE, DELETE and MERGE' if writable else ''}; "
                         f"{(word or statement.strip()[:20])!r} is not one of them.")


def run_statement(engine: Engine, statement: str, *, writable: bool, timeout: float, offset: int = 0,
                  page_size: int = DEFAULT_PAGE_SIZE, sensitive: Iterable[str] = ()) -> ConsoleResult:
    """Run one statement; DBAPIError (PostgreSQL's refusal) propagates for the caller to show."""
    kind = classify(statement, writable=writable)
    if page_size not in PAGE_SIZES:
        raise ConsoleRefusal(f"Page size {page_size} is not one of {', '.join(map(str, PAGE_SIZES))}.")
    if not 0 <= offset <= MAX_OFFSET:
        raise ConsoleRefusal(f"Pages start at most {MAX_OFFSET:,} rows in: add a WHERE or an ORDER BY ... LIMIT "
                             "to bring the rows you want forward.")
    result = ConsoleResult(statement=statement, kind="write" if kind == "write" else "read", offset=offset,
                           page_size=page_size)
    hidden = {name.lower() for name in sensitive}
    started = time.perf_counter()
    with engine.connect() as connection:
        with connection.begin() as transaction:  # the engine's per-transaction settings (PgBouncer) run here
            if kind != "write":
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            # Its own limit, after the engine's: the console's timeout, not the app's.
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
            raw: Any = connection.connection.driver_connection
            # A session-level advisory lock (SELECT pg_advisory_lock(...)) is neither a write nor undone by a
            # rollback: it would stay on the pooled server connection (through PgBouncer, one other clients get),
            # and could be celora's own migration lock. Released in this same transaction (the same server
            # connection), whether the statement succeeded or not: the savepoint keeps the transaction usable.
            raw.execute(f"SAVEPOINT {CURSOR}")
            try:
                _execute(raw, kind, statement, result, offset, page_size, hidden)
            except BaseException:
                with contextlib.suppress(Exception):  # the statement's own error is the one to report
                    raw.execute(f"ROLLBACK TO SAVEPOINT {CURSOR}")
                    raw.execute("SELECT pg_advisory_unlock_all()")
                raise
            raw.execute("SELECT pg_advisory_unlock_all()")
            if kind != "write":
                transaction.rollback()  # a read has nothing to keep
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    return result


def _execute(raw: Any, kind: str, statement: str, result: ConsoleResult, offset: int, page_size: int,
             hidden: set[str]) -> None:
    if kind == "read":
        with raw.cursor(name=CURSOR) as cursor:
            cursor.execute(statement)
            if offset:
                cursor.scroll(offset)
            fetched = cursor.fetchmany(page_size + 1)
            _fill(result, cursor.description, fetched, page_size, hidden)
        return
    with raw.cursor() as cursor:
        cursor.execute(statement)
        result.status = cursor.statusmessage or ""
        if kind == "write":
            result.rowcount = cursor.rowcount
        fetched = cursor.fetchmany(page_size + 1) if cursor.description else []
        _fill(result, cursor.description, fetched, page_size, hidden)


def _fill(result: ConsoleResult, description: Any, fetched: list, page_size: int, hidden: set[str]) -> None:
    if not description:
        return
    result.columns = [column.name for column in description]
    masked = [index for index, name in enumerate(result.columns) if name.lower() in hidden]
    result.masked = [result.columns[index] for index in masked]
    result.has_more = len(fetched) > page_size
    result.rows = [[MASK if index in masked else show(value) for index, value in enumerate(row)]
                   for row in fetched[:page_size]]


def show(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = "\\x" + bytes(value).hex()
    else:
        text = str(value)
    if len(text) > MAX_CELL_CHARS:
        return text[:MAX_CELL_CHARS] + f"… ({len(text):,} characters)"
    return text


class ConsoleView(CustomView):
    """/studio/-/console: the form (GET) and a statement's page of results (POST, with the CSRF token)."""

    def __init__(self, engine: Engine, *, writable: bool, timeout: float, sensitive: Iterable[str],
                 database_url: Any) -> None:
        super().__init__(menu_label="SQL console", icon="fa fa-terminal", path="/-/console", route_name="console")
        self.engine = engine
        self.writable = writable
        self.timeout = timeout
        self.sensitive = tuple(sensitive)
        self.database_url = database_url

    @route("", methods=["GET", "POST"])
    async def index(self, request: Request) -> Response:
        context: dict[str, Any] = {"title": "SQL console", "writable": self.writable, "timeout": self.timeout,
                                   "page_sizes": PAGE_SIZES, "page_size": DEFAULT_PAGE_SIZE, "statement": "",
                                   "result": None, "error": None, "hint": None, "max_offset": MAX_OFFSET}
        status = 200
        if request.method == "POST":
            form = await request.form()
            statement = str(form.get("sql") or "")
            context["statement"] = statement
            try:
                page_size = _number(form.get("page_size"), DEFAULT_PAGE_SIZE)
                offset = _number(form.get("offset"), 0)
                context["page_size"] = page_size
                context["result"] = await anyio.to_thread.run_sync(
                    lambda: run_statement(self.engine, statement, writable=self.writable, timeout=self.timeout,
                                          offset=offset, page_size=page_size, sensitive=self.sensitive))
            except ConsoleRefusal as refusal:
                context["error"], status = refusal.message, refusal.status
            except (DBAPIError, psycopg.Error) as exc:  # the cursor is psycopg's own: its errors come unwrapped
                context["error"], context["hint"] = postgresql_message(exc, self.database_url)
                status = 400
        assert self._admin is not None
        return self._admin._template_response(request=request, name="studio/console.html", context=context,
                                              status_code=status)


def _number(value: Any, default: int) -> int:
    try:
        return int(str(value)) if value not in (None, "") else default
    except ValueError:
        raise ConsoleRefusal(f"{str(value)[:20]!r} is not a whole number.") from None


def postgresql_message(exc: Exception, url: Any) -> tuple[str, str | None]:
    """PostgreSQL's own message (and its hint), or celora's translation when the server was not reached."""
    from celora_cli.db.errors import translate

    diag = getattr(getattr(exc, "orig", exc), "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        sqlstate = getattr(diag, "sqlstate", None)
        position = getattr(diag, "statement_position", None)
        message = f"ERROR: {primary}" + (f" (SQLSTATE {sqlstate}" if sqlstate else "") + (
            f", at character {position})" if position and sqlstate else (")" if sqlstate else ""))
        detail = getattr(diag, "message_detail", None)
        hint = " ".join(part for part in (detail, getattr(diag, "message_hint", None)) if part) or None
        if sqlstate == "57014":  # query_canceled: here, the console's statement timeout
            hint = (hint or "") + " The console stops a statement after its timeout " \
                                  "(CELORA_STUDIO_CONSOLE_TIMEOUT): add a WHERE or a LIMIT."
        return message, hint
    if not isinstance(exc, DBAPIError):
        return str(exc).strip() or type(exc).__name__, None
    error = translate(exc, url)
    return error.message, error.hint
