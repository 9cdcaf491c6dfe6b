"""Two gaps in starlette-admin's SQLAlchemy view that made some rows impossible to open or save (found by the
conflict tests, which save every model's form):

- an empty input of a nullable column that is not text (uuid, inet, ...) arrives as "", which PostgreSQL refuses
  ("invalid input syntax for type uuid"): it is NULL;
- a composite primary key is decoded by calling each column's Python type on its text, and `datetime("2026-...")`
  is a TypeError (rate_limits' key has a timestamp): dates and times are parsed from ISO text instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.sql import sqltypes
from starlette.requests import Request

_FROM_TEXT = {dt.datetime: dt.datetime.fromisoformat, dt.date: dt.date.fromisoformat,
              dt.time: dt.time.fromisoformat}


class FormFixes:
    mapper: Any

    def _setup_primary_key(self) -> None:
        super()._setup_primary_key()  # type: ignore[misc]
        coerce = getattr(self, "_pk_coerce", None)
        if isinstance(coerce, tuple):
            setattr(self, "_pk_coerce", tuple(_FROM_TEXT.get(kind, kind) for kind in coerce))  # noqa: B010

    def _empty_as_null(self, data: dict[str, Any]) -> dict[str, Any]:
        fixed = dict(data)
        for prop in self.mapper.column_attrs:
            column = prop.columns[0]
            if fixed.get(prop.key) == "" and column.nullable and not isinstance(column.type, sqltypes.String):
                fixed[prop.key] = None
        return fixed

    async def create(self, request: Request, data: dict[str, Any]) -> Any:
        return await super().create(request, self._empty_as_null(data))  # type: ignore[misc]

    async def edit(self, request: Request, pk: Any, data: dict[str, Any]) -> Any:
        return await super().edit(request, pk, self._empty_as_null(data))  # type: ignore[misc]
