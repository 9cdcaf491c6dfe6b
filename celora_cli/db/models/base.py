"""Declarative base with a constraint naming convention, so autogenerate diffs are stable."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import DDL, DateTime, FetchedValue, MetaData, Table, event, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The database keeps updated_at, not the ORM: raw UPDATEs and INSERT ... ON CONFLICT DO UPDATE (the
# indexer's path) never run ORM hooks. One shared function, one BEFORE UPDATE trigger per table.
# Migration 20261126150000 writes the same SQL out (history is a snapshot, not an import);
# tests/integration/test_schema_matches_models.py checks that both build the same schema.
SET_UPDATED_AT_FUNCTION = "celora_set_updated_at"
CREATE_SET_UPDATED_AT_FUNCTION = f"""\
CREATE OR REPLACE FUNCTION {SET_UPDATED_AT_FUNCTION}() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$"""
DROP_SET_UPDATED_AT_FUNCTION = f"DROP FUNCTION IF EXISTS {SET_UPDATED_AT_FUNCTION}()"


def updated_at_trigger_name(table: str) -> str:
    return f"trg_{table}_set_updated_at"


def create_updated_at_trigger(table: str) -> str:
    return (
        f"CREATE TRIGGER {updated_at_trigger_name(table)} BEFORE UPDATE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {SET_UPDATED_AT_FUNCTION}()"
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: DateTime(timezone=True)}


# The function belongs to the metadata: create_all makes it before any table (and trigger) needs it,
# drop_all removes it after the tables that use it. OR REPLACE / IF EXISTS: like the tables'
# checkfirst, a second create_all or drop_all on the same database is not an error.
event.listen(Base.metadata, "before_create", DDL(CREATE_SET_UPDATED_AT_FUNCTION))
event.listen(Base.metadata, "after_drop", DDL(DROP_SET_UPDATED_AT_FUNCTION))


class TimestampMixin:
    """created_at / updated_at as timestamptz set by the server, updated_at by a trigger."""

    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    # server_onupdate: the ORM knows the database changes it on UPDATE and re-reads it.
    updated_at: Mapped[dt.datetime] = mapped_column(
        server_default=func.now(), server_onupdate=FetchedValue()
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)  # maps the class: __table__ exists from here on
        table = cls.__dict__.get("__table__")
        if isinstance(table, Table):
            event.listen(table, "after_create", DDL(create_updated_at_trigger(table.name)))
