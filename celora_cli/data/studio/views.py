"""One admin view per mapped model, built from the mapper alone (a new model shows up by itself).

What starlette-admin's SQLAlchemy view does not do, added through its documented hooks:
- counts: PostgreSQL's estimate (pg_class.reltuples) for big tables, and a count bounded in rows and in time
  for filtered views (then the planner's estimate, labelled), so no view runs a full COUNT(*) over a million rows;
- paging at any depth: next, previous and last page by keyset (paging.py, pages.py), OFFSET only for the first
  MAX_OFFSET rows, and a typed deeper page by a walk bounded in time;
- a stable order: the requested sort, then the primary key (equal values never swap between pages);
- slow pages explain themselves: why, and the CREATE INDEX that would cure it (diagnosis.py);
- related records: a one-to-many relationship is a link to the other table's list filtered on the foreign
  key (a wallet with 100,000 transactions loads none of them), a many-to-one one is joined in the same query;
- sensitive columns: never shown, exported, searched or filtered on (a filter would let one probe the value);
- database errors: a readable message on the form (celora's own translation), never a stack trace.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from sqlalchemy import Select, String, cast, func, literal_column, not_, select, text
from sqlalchemy.exc import CompileError, DBAPIError
from sqlalchemy.orm import Mapper, RelationshipProperty, selectinload
from sqlalchemy.sql import sqltypes
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette_admin import (
    BaseField,
    ColorField,
    DateTimeField,
    EmailField,
    EnumField,
    JSONField,
    PhoneField,
    RelationField,
    SlugField,
    StringField,
    TextAreaField,
    URLField,
)
from starlette_admin.actions import link_row_action
from starlette_admin.contrib.sqla import ModelView
from starlette_admin.contrib.sqla import filters as sqla_filters
from starlette_admin.contrib.sqla.filters import SqlaFilterRegistry
from starlette_admin.exceptions import FormValidationError
from starlette_admin.filters import BaseFilter, FilterGroup, FilterRegistry, filters
from starlette_admin.flash import flash
from starlette_admin.helpers import slugify_class_name
from starlette_admin.i18n import lazy_gettext as _
from starlette_admin.types import ListParams, RequestAction

from celora_cli.data.studio.conflicts import ConflictChecks
from celora_cli.data.studio.copy_rows import CopyRows
from celora_cli.data.studio.diagnosis import diagnose
from celora_cli.data.studio.forms import FormFixes
from celora_cli.data.studio.history import is_audited
from celora_cli.data.studio.list_rows import FastListRows
from celora_cli.data.studio.pages import (
    DeepPageTooCostly,
    PageRequest,
    PageResult,
    StudioTuning,
    cancelled,
    fetch_page,
    set_local_timeout,
)
from celora_cli.data.studio.paging import BadCursor, OrderKey, decode_cursor, fingerprint, order_keys
from celora_cli.db.errors import translate

# Tables the planner estimates above this are counted by estimate; below it COUNT(*) is cheap and exact.
ESTIMATE_ABOVE_ROWS = 100_000
# A filtered view counts at most this many matching rows exactly, then falls back to the planner's estimate.
COUNT_LIMIT = 1_000
# The deepest row a page reaches by OFFSET without a time bound; deeper pages are reached by keyset (next,
# previous, last), or by a walk over the keys bounded by CELORA_STUDIO_JUMP_TIMEOUT (a typed page number).
MAX_OFFSET = 10_000
# The biggest page (page_size=); bigger is refused with a 400.
MAX_PAGE_SIZE = 500
# The time zone is always shown (timestamptz values are instants). starlette-admin formats with Babel when it
# is installed (an LDML pattern), with strftime otherwise.
TIMESTAMP_FORMAT = ("yyyy-MM-dd HH:mm:ss zzz" if importlib.util.find_spec("babel") is not None
                    else "%Y-%m-%d %H:%M:%S %Z")
# The field types starlette-admin's search looks in (contrib/sqla ModelView.get_search_query).
_SEARCHED_TYPES = (StringField, SlugField, TextAreaField, EmailField, URLField, PhoneField, ColorField, EnumField)
# Columns that are never shown whatever their `info` says (the models cannot be changed from here).
SENSITIVE_COLUMNS = frozenset({("sessions", "token_hash"), ("idempotency_keys", "response_body")})


class Estimate(int):
    """A row count PostgreSQL estimated. It computes as the number; shown, it says what it is (the home page's
    "N total records" and the pager's "of N entries" print it with str())."""

    def __str__(self) -> str:
        return f"about {int(self):,} (PostgreSQL's estimate)"


def is_sensitive(table: str, column: Any) -> bool:
    return (table, column.name) in SENSITIVE_COLUMNS or bool(column.info.get("sensitive"))


def view_key(mapper: Mapper) -> str:
    """The URL name of a model's view: starlette-admin's own (its relation fields find views by it)."""
    return slugify_class_name(mapper.class_.__name__)


@dataclass
class RelatedRecords(BaseField):
    """A one-to-many relationship shown as a link to the related table's list, filtered on this row."""

    target_key: str = ""
    # (column attribute on this model, filter field on the target model) pairs of the foreign key.
    pairs: tuple[tuple[str, str], ...] = ()
    link_text: str = ""
    exclude_from_create: bool | None = True
    exclude_from_edit: bool | None = True
    exclude_from_export: bool | None = True
    exclude_from_import: bool | None = True
    searchable: bool | None = False
    orderable: bool | None = False
    list_template: str = "studio/related_link.html"
    detail_template: str = "studio/related_link.html"

    async def parse_obj(self, request: Request, obj: Any) -> Any:
        rules = " AND ".join(f'{remote}__eq="{getattr(obj, local)}"' for local, remote in self.pairs)
        url = str(request.url_for("admin:list", key=self.target_key))
        return {"url": f"{url}?filter={quote(rules)}", "label": self.link_text}

    async def serialize_value(self, request: Request, value: Any) -> Any:
        return value


class _Substring:
    """contains / starts with / ends with, as the library's (case-insensitive), with the term's % and _ taken
    literally (the library's let `a_b` match `axb`), and as LIKE when the term has no letter that has a case
    (digits, a hash fragment's 0x...): the same rows, and LIKE reads a row about twice as fast as ILIKE."""

    before = after = True

    def apply(self, ctx: Any) -> Any:
        term = str(ctx.value)
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = ("%" if self.before else "") + escaped + ("%" if self.after else "")
        column = cast(getattr(ctx.view.model, ctx.field_name), String)
        caseless = term.lower() == term.upper()
        return column.like(pattern, escape="\\") if caseless else column.ilike(pattern, escape="\\")


class ContainsFilter(_Substring, sqla_filters.ContainsFilter):
    pass


class NotContainsFilter(_Substring, sqla_filters.NotContainsFilter):
    def apply(self, ctx: Any) -> Any:
        return not_(super().apply(ctx))


class StartsWithFilter(_Substring, sqla_filters.StartsWithFilter):
    before = False


class EndsWithFilter(_Substring, sqla_filters.EndsWithFilter):
    after = False


_SUBSTRING: dict[Any, type[BaseFilter]] = {
    sqla_filters.ContainsFilter: ContainsFilter, sqla_filters.NotContainsFilter: NotContainsFilter,
    sqla_filters.StartsWithFilter: StartsWithFilter, sqla_filters.EndsWithFilter: EndsWithFilter}


class StudioFilterRegistry(SqlaFilterRegistry):
    """Text columns (TEXT is TextAreaField here) get = and != too, as the library gives one-line strings; the
    substring filters are celora's (above)."""

    @filters(StringField)
    def string_filters(self, field: BaseField) -> list[type[BaseFilter]]:
        return [_SUBSTRING.get(each, each) for each in super().string_filters(field)]

    @filters(TextAreaField)
    def textarea_filters(self, field: BaseField) -> list[type[BaseFilter]]:
        return list(self.string_filters(field))


class StudioView(FormFixes, ConflictChecks, CopyRows, FastListRows, ModelView):
    """The generic view; `configure` turns it into one model's view without per-model code. A save refuses to
    overwrite a newer change (conflicts.py); a list can copy its selected rows (copy_rows.py)."""

    page_size = 25
    page_size_options = [10, 25, 50, 100, 250, MAX_PAGE_SIZE]
    tuning = StudioTuning()  # the time bounds (settings), replaced per app
    exporters = ["csv", "json"]
    read_only = False
    table = ""  # schema-qualified, for pg_class
    pk_keys: Sequence[str] = ()
    mapper: Any = None
    foreign_keys: dict[str, str] = {}  # replaced per view class, never mutated
    database_url: Any = None  # the DatabaseURL named (masked) in error messages
    audited = False

    def can_create(self, request: Request) -> bool:
        return not self.read_only

    def can_edit(self, request: Request) -> bool:
        return not self.read_only

    def can_delete(self, request: Request) -> bool:
        return not self.read_only

    def get_filter_registry(self) -> FilterRegistry:
        return StudioFilterRegistry()

    def can_import(self, request: Request) -> bool:
        return False  # bulk imports are `celora db seed`'s job

    # The grid's View and Edit links, relative to the page they are on (/studio/<key>/list or .../detail):
    # the library builds each with url_for, two route searches per row.
    @link_row_action(name="view", text=_("View"), icon_class="default_actions.view", exclude_from_detail=True)
    def row_action_1_view(self, request: Request, pk: Any) -> str:
        return f"detail?pk={quote(str(pk))}"

    @link_row_action(name="edit", text=_("Edit"), icon_class="default_actions.edit",
                     action_btn_class="action.row_item_edit")
    def row_action_2_edit(self, request: Request, pk: Any) -> str:
        return f"edit?pk={quote(str(pk))}"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields:
            if isinstance(field, DateTimeField):
                field.output_format = TIMESTAMP_FORMAT
            elif isinstance(field, JSONField):
                field.form_template = "studio/json_form.html"
            elif isinstance(field, EnumField) and field.enum is not None:
                # Labelled with the stored value (what SQL, the filters and the app see), not the Python name.
                field.choices = [(member.value, str(member.value)) for member in field.enum]

    async def count(self, request: Request, q: str | None = None, filters: FilterGroup | None = None) -> int:
        known = _totals(request).get(self.key)
        if known is not None:  # the page already knows it (it reached the end), or "last page" counted it
            return known
        unfiltered = q is None and (filters is None or filters.is_empty())
        matching = await self._apply_search_and_filters(
            request, select(literal_column("1")).select_from(self.model), q, filters)
        # One trip to a worker thread for the whole count (each trip is a scheduling delay on a busy machine).
        total = await anyio.to_thread.run_sync(self._count, request.state.session, matching, unfiltered)
        _totals(request)[self.key] = total
        return total

    def _count(self, session: Any, matching: Select, unfiltered: bool) -> int:
        # A savepoint: the home page counts every table in one transaction, and one table that fails (not
        # migrated yet) must not abort the others' counts.
        with session.begin_nested():
            if unfiltered:
                rows = session.execute(_ESTIMATE_SQL, {"table": self.table}).scalar_one_or_none() or 0
                if rows > ESTIMATE_ABOVE_ROWS:
                    return Estimate(rows)
            # Bounded in rows (at most COUNT_LIMIT + 1 matches are counted) and in time: a selective filter
            # over an unindexed column finds its few matches only by reading every row, and the count must not
            # cost that a second time. Past either bound the planner's estimate stands in, labelled.
            bounded = select(func.count()).select_from(matching.limit(COUNT_LIMIT + 1).subquery())
            timed = session.begin_nested()
            try:
                set_local_timeout(session.connection(), self.tuning.count_timeout)
                counted: int | None = int(session.execute(bounded).scalar_one())
            except DBAPIError as exc:
                if not cancelled(exc):
                    raise
                counted = None
            finally:
                timed.rollback()  # restores statement_timeout
            if counted is not None and counted <= COUNT_LIMIT:
                return counted
            plan = session.execute(_explain(matching, session)).scalar_one()
            return Estimate(max(counted or 0, int(plan[0]["Plan"]["Plan Rows"])))

    def _parse_list_params(self, request: Request, query_params: Any = None) -> ListParams:
        """Any page size from 1 to MAX_PAGE_SIZE (the library takes only the listed ones), refused clearly
        past it."""
        params = request.query_params if query_params is None else query_params
        raw = params.get("page_size")
        if raw is None:
            return super()._parse_list_params(request, query_params)
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise HTTPException(400, f"page_size={raw[:20]!r} is not a page size: a page holds 1 to "
                                     f"{MAX_PAGE_SIZE} rows (default {self.page_size}). Bigger pages are refused: "
                                     "the browser would render thousands of cells; export the list for more.")
        rest = QueryParams([(key, value) for key, value in params.multi_items() if key != "page_size"])
        parsed = super()._parse_list_params(request, rest)
        parsed.page_size = size
        return parsed

    async def find_all(self, request: Request, skip: int = 0, limit: int = 100, q: str | None = None,
                       sorts: Sequence[tuple[str, str]] | None = None,
                       filters: FilterGroup | None = None) -> Sequence[Any]:
        if request.state.action != RequestAction.LIST or limit <= 0:
            return await self._find_plain(request, skip, limit, q, sorts, filters)
        order = order_keys(self.model, list(sorts or []), self.pk_keys)
        params = request.query_params
        list_id = fingerprint([(key.name, key.descending) for key in order], q, params.get("filter"), limit)
        page = await self._page_request(request, params, order, list_id, skip, limit, q, filters)
        keys = [getattr(self.model, key) for key in self.pk_keys]
        keys_query = await self._apply_search_and_filters(request, select(*keys).select_from(self.model), q,
                                                          filters)
        searched = [field for field in self.get_fields_list(request)
                    if field.searchable and type(field) in _SEARCHED_TYPES]
        # Many-to-one rows in one second query (WHERE id IN the page's keys), never a join per row.
        load_options = [selectinload(getattr(self.model, field.name)) for field in self.get_fields_list(request)
                        if isinstance(field, RelationField)]
        tuning = self.tuning

        def run() -> PageResult:
            session = request.state.session
            result = fetch_page(session, self.model, keys_query, order, keys, page, list_id,
                                jump_timeout=tuning.jump_timeout,
                                search_timeout=tuning.search_timeout if q is not None else None,
                                max_offset=MAX_OFFSET, load_options=load_options)
            if result.elapsed >= tuning.slow_page or result.partial:
                filtered = keys_query if keys_query.whereclause is not None else None
                ordered = select(*keys).select_from(self.model).order_by(*(key.clause() for key in order))
                try:
                    result.notes = diagnose(session, filtered, ordered.limit(limit), self.table, order,
                                            searching=q is not None, searched_columns=len(searched))
                except (CompileError, DBAPIError):  # the explanation is a courtesy: the page stands without it
                    result.notes = []
            return result

        try:
            result = await anyio.to_thread.run_sync(run)
        except DeepPageTooCostly as exc:
            raise HTTPException(400, exc.message) from None
        except DBAPIError as exc:
            # A cursor whose value PostgreSQL refuses (out of the column's range: class 22, data exception) was
            # edited by hand; anything else is the database's own error, shown as such.
            sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "")
            if page.values is None or not sqlstate.startswith("22"):
                raise
            raise HTTPException(400, "This page link is not valid (a value in it is out of range). Start again "
                                     "from the first page.") from None
        if result.exact_total is not None:
            _totals(request)[self.key] = result.exact_total
        request.state.studio_page = result
        return result.rows

    async def _page_request(self, request: Request, params: Any, order: list[OrderKey], list_id: str, skip: int,
                            limit: int, q: str | None, filters: FilterGroup | None) -> PageRequest:
        """Which page the URL asks for (see pages.py); a cursor from another list (the sort, filter or page
        size changed since the link was made) is ignored: the page number stands."""
        number = max(1, skip // limit + 1)
        mode = next((name for name in ("after", "before") if params.get(name)), None)
        if mode is not None:
            try:
                values = decode_cursor(params[mode], list_id, order)
            except BadCursor as exc:
                raise HTTPException(400, f"This page link is not valid ({exc}). Start again from the first "
                                         "page.") from None
            if values is not None:
                from_end = _positive(params.get("from_end"))
                return PageRequest(mode, None if from_end else number, from_end, 0, limit, values)
        if params.get("last"):
            total = await self.count(request, q, filters)
            if isinstance(total, Estimate):
                return PageRequest("last", None, 1, 0, limit)
            pages = max(1, -(-int(total) // limit))
            return PageRequest("last", pages, None, 0, int(total) - (pages - 1) * limit or limit, page_size=limit)
        return PageRequest("offset", number, None, skip, limit)

    async def _find_plain(self, request: Request, skip: int, limit: int, q: str | None,
                          sorts: Sequence[tuple[str, str]] | None, filters: FilterGroup | None) -> Sequence[Any]:
        """Exports and relation look-ups: the library's query with a stable order (no pager, no cursor)."""
        if skip > MAX_OFFSET:
            raise HTTPException(400, f"Rows past {MAX_OFFSET:,} are not read by offset: sort or filter instead.")
        order = order_keys(self.model, list(sorts or []), self.pk_keys)
        statement = self.get_list_query(request)
        statement = await self._apply_search_and_filters(request, statement, q, filters)
        statement = statement.order_by(*(key.clause() for key in order)).offset(skip)
        if limit > 0:
            statement = statement.limit(limit)
        result = await anyio.to_thread.run_sync(request.state.session.execute, statement)
        return result.scalars().unique().all()

    def get_list_query(self, request: Request) -> Select:
        return select(self.model)

    def get_count_query(self, request: Request) -> Select:
        return select(func.count()).select_from(self.model)

    async def handle_exception(self, request: Request, exc: Exception) -> None:
        if not isinstance(exc, DBAPIError):
            await super().handle_exception(request, exc)

        error = translate(exc, self.database_url)
        message = f"{error.message} {error.hint or ''}".strip()
        flash(request, message, "error")
        raise FormValidationError({self._field_for(exc): message}) from exc

    def _field_for(self, exc: Exception) -> str:
        """The form field a database error is about (its column, or its constraint's first column)."""
        diag = getattr(getattr(exc, "orig", None), "diag", None)
        column = getattr(diag, "column_name", None)
        constraint = getattr(diag, "constraint_name", None)
        names = [column] if column else []
        for candidate in self.model.__table__.constraints | set(self.model.__table__.indexes):
            if constraint and candidate.name == constraint:
                names += [c.name for c in getattr(candidate, "columns", [])]
        by_column = {prop.columns[0].name: prop.key for prop in self.mapper.column_attrs}
        fields = {field.name for field in self.fields}
        for name in names:
            if by_column.get(name) in fields:
                return by_column[name]
        return self.pk_keys[0]


_ESTIMATE_SQL = text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:table)")


def _explain(statement: Select, session: Any):
    compiled = statement.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    return text(f"EXPLAIN (FORMAT JSON) {compiled}")


def build_view(mapper: Mapper, *, read_only: bool, database_url: Any = None,
               tuning: StudioTuning | None = None) -> StudioView:
    """A configured view for one mapped model: every column, many-to-one links, one-to-many list links."""
    table: Any = mapper.local_table
    column_attrs = [prop for prop in mapper.column_attrs if len(prop.columns) == 1]
    sensitive = [prop.key for prop in column_attrs if is_sensitive(str(table.name), prop.columns[0])]
    fields: list[Any] = [prop.key for prop in column_attrs]
    # The generated primary key and the trigger-kept updated_at.
    server_made = [prop.key for prop in column_attrs if (prop.columns[0].primary_key and prop.columns[0].server_default
                                                        is not None) or prop.columns[0].server_onupdate is not None]
    relations = [prop for prop in mapper.relationships if isinstance(prop, RelationshipProperty)]
    many_to_one = [prop.key for prop in relations if not prop.uselist]
    fields += many_to_one
    fields += [_related_records(mapper, prop) for prop in relations if prop.uselist]
    attrs = {
        "fields": fields,
        # A table can be read-only whatever the mode: its model says so in `__table__.info` (audit_log: a
        # log edited by hand is no longer evidence).
        "read_only": read_only or bool(table.info.get("studio_read_only")),
        "database_url": database_url,
        "tuning": tuning or StudioTuning(),
        "table": f"{table.schema + '.' if table.schema else ''}{table.name}",
        "mapper": mapper,
        "audited": is_audited(table),  # its detail and edit pages link to its history (history.py)
        "pk_keys": tuple(mapper.get_property_by_column(column).key for column in mapper.primary_key),
        # In the grid a foreign key column is the link to its row (no related row loaded); the detail page
        # shows the related row itself.
        "exclude_fields_from_list": sensitive + many_to_one,
        "foreign_keys": _foreign_key_links(mapper, relations),
        "exclude_fields_from_detail": sensitive,
        # A many-to-one link is for navigating; its foreign key column is the form's input (a select over a
        # million-row table would be neither usable nor fast). Server-made values are not typed in.
        "exclude_fields_from_create": sensitive + many_to_one + server_made,
        "exclude_fields_from_edit": sensitive + many_to_one + server_made,
        "exclude_fields_from_export": sensitive,
        # Edited in place from the grid (a popover per cell): plain columns; JSON keeps its editor on the edit page.
        "inline_editable_fields": [prop.key for prop in column_attrs if prop.key not in sensitive + server_made
                                   and not prop.columns[0].primary_key and not _is_json(prop.columns[0])],
        "searchable_fields": [key for key in fields if isinstance(key, str) and key not in sensitive],
        "sortable_fields": [prop.key for prop in column_attrs if prop.key not in sensitive],
    }
    view_class = type(f"{mapper.class_.__name__}StudioView", (StudioView,), attrs)
    name = str(table.name).replace("_", " ")
    return view_class(mapper.class_, key=view_key(mapper), menu_label=name.capitalize(),
                      display_name=name.capitalize())


def _is_json(column: Any) -> bool:
    return isinstance(column.type, sqltypes.JSON)


def _foreign_key_links(mapper: Mapper, relations: list[RelationshipProperty]) -> dict[str, str]:
    """Column attribute -> relative URL of the row it points at, for each single-column many-to-one link."""
    links = {}
    for prop in relations:
        pairs = list(prop.local_remote_pairs or [])
        target_keys = list(prop.mapper.primary_key)
        if prop.uselist or len(pairs) != 1 or len(target_keys) != 1 or pairs[0][1] is not target_keys[0]:
            continue
        # Relative to /studio/<key>/list, the page the grid is on.
        links[mapper.get_property_by_column(pairs[0][0]).key] = f"../{view_key(prop.mapper)}/detail?pk="
    return links


def _related_records(mapper: Mapper, prop: RelationshipProperty) -> RelatedRecords:
    target = prop.mapper
    pairs = tuple((mapper.get_property_by_column(local).key, target.get_property_by_column(remote).key)
                  for local, remote in prop.local_remote_pairs)
    text = f"{prop.key.replace('_', ' ')} of this {mapper.class_.__name__.lower()}"
    return RelatedRecords(prop.key, label=prop.key.replace("_", " ").capitalize(), target_key=view_key(target),
                          pairs=pairs, link_text=text)


def build_views(base: Any, *, read_only: bool, database_url: Any = None,
                tuning: StudioTuning | None = None) -> list[StudioView]:
    """A view for every model mapped on `base`'s registry, in table-name order."""
    mappers = sorted(base.registry.mappers, key=lambda mapper: str(getattr(mapper.local_table, "name", "")))
    return [build_view(mapper, read_only=read_only, database_url=database_url, tuning=tuning) for mapper in mappers]


def _totals(request: Request) -> dict[str | None, int]:
    """This request's row counts by view (the list page counts once: the pager, the banner, "last page")."""
    if not hasattr(request.state, "studio_totals"):
        request.state.studio_totals = {}
    return request.state.studio_totals


def _positive(raw: str | None) -> int | None:
    try:
        value = int(raw or "")
    except ValueError:
        return None
    return value if value > 0 else None
