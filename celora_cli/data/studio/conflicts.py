"""Edits that cannot overwrite someone else's change (optimistic concurrency, generic over the mappers).

The edit page and the grid's inline-edit popover carry, in a hidden field, a hash of each value they loaded
(per field: the values themselves would repeat a JSON document in the page). At save the row is locked
(`SELECT ... FOR UPDATE`, held until the save commits) and each field the save writes is compared with what the
page loaded. When another session changed one, nothing is written: the form comes back (422) with, per field, the
other session's value and the one typed, and now carries the current values' hashes, so saving again is a
deliberate choice to replace theirs. A save without the hidden field (a page from before, a hand-made request) is
refused the same way: there is nothing to compare with.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from markupsafe import Markup, escape
from sqlalchemy import and_, select
from starlette.requests import Request
from starlette_admin.exceptions import FormValidationError
from starlette_admin.types import RequestAction

LOADED_FIELD = "_celora_loaded"
SHOWN_CHARS = 300


@dataclass(frozen=True)
class FieldConflict:
    name: str
    label: str
    theirs: str
    yours: str


def canonical(value: Any) -> Any:
    """A JSON-able form of a value read from PostgreSQL: the same value always gives the same text."""
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID, dt.timedelta)):
        return str(value)
    if isinstance(value, dict):
        return {str(key): canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value


def value_hash(value: Any) -> str:
    text = json.dumps(canonical(value), sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def shown(value: Any) -> str:
    """A value as the conflict message shows it: NULL, JSON as JSON, long text cut."""
    if value is None:
        return "NULL"
    value = canonical(value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"… ({len(text):,} characters)"


def loaded_input(request: Request) -> Markup:
    """The hidden field with the loaded values' hashes (a Jinja global: edit.html, inline-edit/field.html)."""
    loaded = getattr(request.state, "celora_loaded", None)
    if loaded is None:
        return Markup("")
    return Markup(f'<input type="hidden" name="{LOADED_FIELD}" value="{escape(json.dumps(loaded))}">')


def conflicts_of(request: Request) -> list[FieldConflict]:
    return list(getattr(request.state, "celora_conflicts", []))


class ConflictChecks:
    """Mixed into StudioView (before ModelView): records what a form loaded, refuses a save over a newer change."""

    mapper: Any
    model: Any

    def _guarded_names(self, request: Request) -> list[str]:
        columns = {prop.key for prop in self.mapper.column_attrs}
        return [field.name for field in self.get_fields_list(request)  # type: ignore[attr-defined]
                if field.name in columns and not field.read_only]

    async def find_by_pk(self, request: Request, pk: Any) -> Any:
        obj = await super().find_by_pk(request, pk)  # type: ignore[misc]
        if obj is not None and getattr(request.state, "action", None) in (RequestAction.EDIT,
                                                                           RequestAction.INLINE_EDIT):
            if getattr(request.state, "celora_conflicts", None) is None:  # after a conflict: the locked row's
                request.state.celora_loaded = {name: value_hash(getattr(obj, name, None))
                                               for name in self._guarded_names(request)}
        return obj

    async def edit(self, request: Request, pk: Any, data: dict[str, Any]) -> Any:
        await self._refuse_overwrite(request, pk, data)
        return await super().edit(request, pk, data)  # type: ignore[misc]

    async def _refuse_overwrite(self, request: Request, pk: Any, data: dict[str, Any]) -> None:
        names = [name for name in self._guarded_names(request) if name in data]
        if not names:
            return
        form = await request.form()
        try:
            loaded = json.loads(str(form.get(LOADED_FIELD) or ""))
        except ValueError:
            loaded = None
        obj = await self.find_by_pk(request, pk)
        if obj is None:
            return  # the library answers 404 itself
        session = request.state.session
        key = self.mapper.primary_key_from_instance(obj)
        where = and_(*(column == value for column, value in zip(self.mapper.primary_key, key, strict=True)))
        locked = select(*(getattr(self.model, name) for name in names)).where(where).with_for_update()
        row = (await anyio.to_thread.run_sync(session.execute, locked)).one()
        current = dict(zip(names, row, strict=True))
        labels = {field.name: field.label for field in self.get_fields_list(request)}  # type: ignore[attr-defined]
        if not isinstance(loaded, dict):
            conflicts = [FieldConflict(name, labels.get(name, name), shown(current[name]), shown(data[name]))
                         for name in names[:1]]
            message = ("This form does not say which values it was loaded with, so a newer change cannot be told "
                       "apart: nothing was saved. Save again to write these values (they are now compared with "
                       "the row as it is), or reload the page.")
        else:
            conflicts = [FieldConflict(name, labels.get(name, name), shown(current[name]), shown(data[name]))
                         for name in names if loaded.get(name) != value_hash(current[name])]
            message = ""
        if not conflicts:
            return
        # The form comes back comparing with the row as it is now: saving again replaces theirs on purpose.
        request.state.celora_loaded = {name: value_hash(value) for name, value in current.items()}
        request.state.celora_conflicts = conflicts
        raise FormValidationError({
            conflict.name: message or (f"Changed by another session since this page loaded: now {conflict.theirs!r}, "
                                       f"yours {conflict.yours!r}. Nothing was saved; save again to replace "
                                       "their value with yours.")
            for conflict in conflicts})
