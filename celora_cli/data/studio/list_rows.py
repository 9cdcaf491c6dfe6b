"""A list page's rows serialized and drawn without starlette-admin's per-cell machinery, with the same result.

The library serializes each row field by field: `get_fields_list` (an access check per field), then two awaited
coroutines per cell (`parse_obj`, `serialize_field_value`, each logging at debug level), and a detail URL built
through the router per row. On a 25-row page of the 19-column transactions table that was 9 ms of a 33 ms page
(benchmarks/bench_studio.py). Here the per-page work is done once per request: the visible fields, which of them
the library converts with a plain function (its base, string, decimal and integer fields: `value`, `str(value)`,
`str(value)`, `int(value)`, and an enum field's label, for a field with no getter and no formatter), and the
detail URL's prefix. Those cells are converted here directly; every other field (dates, relations, anything a
subclass formats) still goes through the library's own code, so a row holds exactly what the library would have
produced (tests/data/test_studio_list_rows.py compares both on every table).

A row's actions (its View and Edit links) are drawn once per page and set to each row's key
(`row_actions_cell`): the library's template, included per row, was 0.1 ms a row. A key that URL quoting or HTML
escaping would change (not a UUID or a number) is drawn by the template as before.

The cells of a row are drawn here too (`row_cells`, called by templates/_list_row.html): the template spent
about 14 microseconds a cell on its loop, attribute look-ups and filters, and an {% include %} per JSON cell
(0.1 ms each), a third of a 25-row page. NULL, foreign-key, text and JSON cells are written as the templates
wrote them; any other cell (a relation, an empty list) is left to the field's own list template.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlencode

from jinja2 import pass_context
from jinja2.filters import do_urlencode
from jinja2.runtime import Context
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette_admin import BaseField, DecimalField, EnumField, IntegerField, StringField
from starlette_admin.helpers import _carry_origin, html_safe_json
from starlette_admin.helpers import static_url as library_static_url
from starlette_admin.types import RequestAction


def _same(value: Any) -> Any:
    return value


# The library's list-page conversion of a non-None value, by the serialize_value a field class inherits. Its own
# code, read for starlette-admin 1.0 (fields.py); a field class that overrides serialize_value is not in here.
_CONVERSIONS: dict[Any, Callable[[Any], Any]] = {
    BaseField.serialize_value: _same,
    StringField.serialize_value: str,
    DecimalField.serialize_value: str,
    IntegerField.serialize_value: int,
}


# Stands for the row's key in the row actions drawn once per page: quoting and escaping leave it as it is.
_KEY_STAND_IN = "celora-row-key-5e0c1d"
# Keys that quoting and escaping leave as they are (UUIDs, numbers), so they can take the stand-in's place.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.~-]+")
# Asset paths the router would write unchanged after the static mount's own URL.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.~-]+(/[A-Za-z0-9_.~-]+)*")

# The list templates of the text-like fields (celora's own, templates/fields/list/text.html) and of JSON fields
# (the library's), which row_cells draws itself.
TEXT_TEMPLATE = "fields/list/text.html"
JSON_TEMPLATE = "fields/list/json.html"


@dataclass(frozen=True)
class _ListPlan:
    fields: tuple[tuple[BaseField, Callable[[Any], Any] | None], ...]  # (field, its conversion, None: the library's)
    detail_prefix: str  # the detail page's URL, before its query
    origin: str | None  # the `_origin` the library carries to the detail page


def list_conversion(field: BaseField) -> Callable[[Any], Any] | None:
    """The function the library's list page applies to this field's (non-None) attribute, when it is a plain
    one; None when only the library's own code can say (None values stay None for these fields either way)."""
    kind = type(field)
    if (kind.parse_obj is not BaseField.parse_obj or kind.serialize_none_value is not BaseField.serialize_none_value
            or field.getter is not None or (field.formatter or {}).get(RequestAction.LIST) is not None):
        return None
    if kind.serialize_value is EnumField.serialize_value:
        return _enum_labels(field)  # type: ignore[arg-type]
    return _CONVERSIONS.get(kind.serialize_value)


def _enum_labels(field: EnumField) -> Callable[[Any], Any] | None:
    """EnumField's list-page conversion (the label of the first choice equal to the value) as a dict look-up,
    for a single-valued field with fixed choices. A value with no label raises KeyError: the library's own code
    then answers (it raises a ValueError naming the field)."""
    if field.multiple or field.choices_loader is not None or not field.choices:
        return None
    labels: dict[Any, Any] = {}
    for choice in field.choices:  # (value, label) pairs: the field's __post_init__ pairs plain values
        value, label = choice if isinstance(choice, (list, tuple)) else (choice, choice)
        labels.setdefault(value, label)

    def label_of(value: Any) -> Any:
        return labels[value.value if isinstance(value, Enum) else value]

    return label_of


class FastListRows:
    """Mixin for a starlette-admin ModelView: `serialize` for list pages, computed once per request."""

    async def serialize(self, obj: Any, request: Request, include_relationships: bool = True,
                        include_select2: bool = False) -> dict[str, Any]:
        if include_select2 or not include_relationships or request.state.action != RequestAction.LIST:
            return await super().serialize(obj, request, include_relationships,  # type: ignore[misc]
                                           include_select2)
        plan = self._list_plan(request)
        row: dict[str, Any] = {}
        for field, convert in plan.fields:
            if convert is not None:
                value = getattr(obj, field.name, None)
                try:
                    row[field.name] = None if value is None else convert(value)
                    continue
                except KeyError:  # an enum value without a label: the library says what is wrong
                    pass
            value = await field.parse_obj(request, obj)
            row[field.name] = await self.serialize_field_value(value, field, request)  # type: ignore[attr-defined]
        pk_attr = self.pk_attr  # type: ignore[attr-defined]
        if pk_attr not in row:
            row[pk_attr] = await self.get_serialized_pk_value(request, obj)  # type: ignore[attr-defined]
        pk = await self.get_pk_value(request, obj)  # type: ignore[attr-defined]
        query = [("pk", str(pk))] + ([("_origin", plan.origin)] if plan.origin else [])
        row["_meta"] = {"repr": await self.repr(obj, request),  # type: ignore[attr-defined]
                        "detailUrl": f"{plan.detail_prefix}?{urlencode(query)}"}
        return row

    def _list_plan(self, request: Request) -> _ListPlan:
        plans = getattr(request.state, "celora_list_plans", None)
        if plans is None:
            plans = request.state.celora_list_plans = {}
        key = self.key  # type: ignore[attr-defined]
        if key not in plans:
            fields = self.get_fields_list(request)  # type: ignore[attr-defined]
            prefix = str(request.url_for(request.app.state.ROUTE_NAME + ":detail", key=key))
            plans[key] = _ListPlan(tuple((field, list_conversion(field)) for field in fields), prefix,
                                   _carry_origin(request))
        return plans[key]

    def row_cells(self, row: dict[str, Any], fields: list[BaseField],
                  inline_edit_enabled: bool) -> list[tuple[Markup, BaseField | None]]:
        """A row's cells, as runs of drawn HTML: (html, None) for cells drawn here, (the cell's opening <td>,
        field) for a cell the field's own list template draws (the template closes it)."""
        editable_fields = self.inline_editable_fields if inline_edit_enabled else ()  # type: ignore[attr-defined]
        foreign_keys = self.foreign_keys  # type: ignore[attr-defined]
        parts: list[tuple[Markup, BaseField | None]] = []
        drawn: list[str] = []
        for field in fields:
            name = escape(field.name)
            opening = f'<td data-column="{name}"'
            if field.name in editable_fields:
                opening += f' data-sa-inline-editable="1" data-sa-field="{name}"'
            opening += ">"
            content = _cell(field, row[field.name], foreign_keys)
            if content is None:
                parts.append((Markup("".join(drawn) + opening), field))
                drawn = []
            else:
                drawn.append(f"{opening}{content}</td>")
        if drawn:
            parts.append((Markup("".join(drawn)), None))
        return parts


def _cell(field: BaseField, data: Any, foreign_keys: dict[str, str]) -> str | None:
    """A cell's content as templates/_list_row.html and the field's list template drew it; None for a cell only
    the field's own template can draw."""
    if data is None:
        return '<span class="text-muted inline-edit-value">-null-</span>'
    if field.name in foreign_keys:
        text = escape(str(data))
        link = escape(foreign_keys[field.name] + do_urlencode(str(data)))
        return f'<a class="celora-foreign-key inline-edit-value text-nowrap" href="{link}">{text}</a>'
    if field.list_template == TEXT_TEMPLATE:
        text = escape(str(data))
        return ('<span class="align-middle d-inline-block text-truncate inline-edit-value" data-bs-toggle="tooltip" '
                f'data-bs-placement="bottom" title="{text}" style="max-width: 30em">{text}</span>')
    if field.list_template == JSON_TEMPLATE and not (isinstance(data, (list, tuple)) and not data):
        # starlette-admin's fields/list/json.html ("tojson" is its html_safe_json there)
        flags = " ".join(f'data-{flag.replace("_", "-")}="{html_safe_json(getattr(field, "viewer_" + flag))}"'
                         for flag in ("collapsed", "with_quotes", "with_links", "root_collapsable"))
        return (f'<div class="field-json d-inline-block align-middle text-truncate inline-edit-value" '
                f'data-json="{escape(str(html_safe_json(data)))}" {flags} style="max-width: 30em"></div>')
    return None


@pass_context
def row_actions_cell(context: Context, pk: Any, actions: list[Any], display_type: Any) -> Markup:
    """The library's row-actions.html for this row (as its `{% include %}` drew it, with pk, _actions and
    display_type set), drawn once per page and list of actions, then given this row's key."""
    template = context.environment.get_template("row-actions.html")
    key = str(pk)
    if not _PLAIN_KEY.fullmatch(key):
        return Markup(template.render({**context.get_all(), "pk": pk, "_actions": actions,
                                       "display_type": display_type}))
    state = context["request"].state  # one cache per page: each row's include has a context of its own
    cache = getattr(state, "celora_row_actions", None)
    if cache is None:
        cache = state.celora_row_actions = {}
    cache_key = (repr(actions), repr(display_type))
    if cache_key not in cache:
        cache[cache_key] = template.render({**context.get_all(), "pk": _KEY_STAND_IN, "_actions": actions,
                                            "display_type": display_type})
    return Markup(cache[cache_key].replace(_KEY_STAND_IN, key))


def static_url(request: Request, path: str, v: Any = None) -> str:
    """starlette-admin's static_url (helpers.py), with the static mount's URL looked up once per request instead
    of once per asset (twenty a page, through the router)."""
    state = request.state
    prefix = getattr(state, "celora_static_prefix", None)
    if prefix is None:
        prefix = state.celora_static_prefix = str(request.url_for(request.app.state.ROUTE_NAME + ":static",
                                                                  path=""))
    if not _PLAIN_PATH.fullmatch(path):
        return library_static_url(request, path, v)
    return prefix + path + ("" if v is None else "?" + urlencode({"v": v}))
