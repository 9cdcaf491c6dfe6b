"""A row's history: its entries in audit_log (written by the database's triggers, celora_cli/db/models/audit_log.py),
newest first, a page at a time by keyset (`?before=<id>`: every page costs one index lookup on (table_name,
row_key), however long the history).

The row key is built from the URL's pk the way the trigger builds it (`{"id": "<uuid>"}`: a uuid as text, an integer
as a number), so the history of a deleted row is found too. Values of sensitive columns are not in the log (the
trigger leaves them out); a column the studio hides is masked here as well, should an old entry hold it. The
studio reads audit_log as its own role: in the role model of `celora db roles` the app's role may not (the page says
so, and names `celora db audit`, which reads it on the direct URL)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette_admin.routing import route
from starlette_admin.tools import iterdecode
from starlette_admin.views import CustomView

from celora_cli.data.studio.conflicts import shown
from celora_cli.db.models.audit_log import NOT_AUDITED, AuditLog

PAGE_SIZE = 25
MASK = "•••• (sensitive)"


@dataclass(frozen=True)
class Change:
    column: str
    old: str | None  # None: the operation had no old (INSERT) or new (DELETE) value
    new: str | None


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    changed_at: Any
    operation: str
    actor: str
    db_role: str
    application_name: str | None
    transaction_id: int
    changes: list[Change]


def is_audited(table: Any) -> bool:
    return str(table.name) not in NOT_AUDITED


def row_key(mapper: Any, pk: str) -> dict[str, Any]:
    """{"column": value} as the trigger writes it, from the pk the detail page's URL carries."""
    columns = list(mapper.primary_key)
    parts = list(iterdecode(pk)) if len(columns) > 1 else [pk]
    if len(parts) != len(columns):
        raise HTTPException(400, f"{pk!r} is not a primary key of {mapper.local_table.name}.")
    key: dict[str, Any] = {}
    for column, part in zip(columns, parts, strict=True):
        try:
            python_type = column.type.python_type
        except NotImplementedError:
            python_type = str
        try:
            if python_type is int:
                key[column.name] = int(part)
            elif python_type is uuid.UUID:
                key[column.name] = str(uuid.UUID(part))
            else:
                key[column.name] = str(part)
        except ValueError:
            raise HTTPException(400, f"{part!r} is not a value of {column.table.name}.{column.name} "
                                     f"({column.type}).") from None
    return key


def entry_changes(old: dict | None, new: dict | None, hidden: set[str]) -> list[Change]:
    """old -> new per column: every recorded column on INSERT and DELETE, the changed ones on UPDATE."""
    old_values, new_values = old or {}, new or {}
    columns = list(new_values) + [column for column in old_values if column not in new_values]

    def value(values: dict | None, column: str) -> str | None:
        if values is None:
            return None
        return MASK if column in hidden else shown(values.get(column))

    return [Change(column, value(old, column), value(new, column)) for column in columns]


class HistoryView(CustomView):
    """/studio/-/history/<key>?pk=...[&before=<audit id>]"""

    def __init__(self, hidden_columns: dict[str, set[str]]) -> None:
        super().__init__(menu_label="History", path="/-/history", route_name="history", add_to_menu=False)
        self.hidden_columns = hidden_columns  # table -> columns the studio never shows

    @route("/{key}", methods=["GET"], name="row-history")
    async def row_history(self, request: Request) -> Response:
        assert self._admin is not None
        view: Any = self._admin._find_view_by_key(request.path_params["key"])
        pk = request.query_params.get("pk", "")
        table = view.mapper.local_table
        if not pk or not is_audited(table):
            raise HTTPException(404, f"{table.name} has no history in audit_log." if pk else "No row named (pk).")
        key = row_key(view.mapper, pk)
        before = request.query_params.get("before")
        if before is not None and not before.isdigit():
            raise HTTPException(400, "before must be an audit_log id.")
        statement = (select(AuditLog).where(AuditLog.table_name == str(table.name), AuditLog.row_key == key)
                     .order_by(AuditLog.id.desc()).limit(PAGE_SIZE + 1))
        if before is not None:
            statement = statement.where(AuditLog.id < int(before))
        context: dict[str, Any] = {"title": f"History of {table.name} {pk}", "view": view, "pk": pk,
                                   "table": str(table.name), "key": json.dumps(key), "entries": [], "next": None,
                                   "error": None, "hint": None, "first_page": before is None}
        status = 200
        try:
            rows = (await anyio.to_thread.run_sync(request.state.session.execute, statement)).scalars().all()
        except DBAPIError as exc:
            from celora_cli.data.studio.console import postgresql_message

            context["error"], _ = postgresql_message(exc, view.database_url)
            context["hint"] = ("The studio reads audit_log as its own database role, which may not read it (in "
                               "the role model of `celora db roles`, only the migration role does). Read the "
                               f"history with `celora db audit --table {table.name} --id {pk}` instead.")
            status = 403 if getattr(getattr(exc.orig, "diag", None), "sqlstate", None) == "42501" else 500
            rows = []
        hidden = self.hidden_columns.get(str(table.name), set())
        context["entries"] = [
            HistoryEntry(row.id, row.changed_at, row.operation, row.actor, row.db_role, row.application_name,
                         row.transaction_id, entry_changes(row.old_values, row.new_values, hidden))
            for row in rows[:PAGE_SIZE]]
        if len(rows) > PAGE_SIZE:
            context["next"] = rows[PAGE_SIZE - 1].id
        return self._admin._template_response(request=request, name="studio/history.html", context=context,
                                              status_code=status)
