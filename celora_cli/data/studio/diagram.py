"""The schema as a diagram, drawn server-side as SVG from the SQLAlchemy models (no script, nothing fetched: the
page works offline and a new model appears with no new code).

Layout: a table sits one column right of every table it references (its depth in the foreign-key graph), so edges
run right to left, from the referencing column to the referenced one; boxes in a column are ordered by name. Each
box lists the columns (PK and FK marked, type, nullable as "?") and its title links to the table's list page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import Response
from starlette_admin.routing import route
from starlette_admin.views import CustomView

BOX_WIDTH = 300
COLUMN_GAP = 120
ROW_GAP = 40
HEADER = 28
LINE = 18
MARGIN = 20
MAX_TYPE_CHARS = 16


@dataclass
class Box:
    table: Any
    link: str | None
    depth: int = 0
    x: int = 0
    y: int = 0
    rows: list[Any] = field(default_factory=list)

    @property
    def height(self) -> int:
        return HEADER + LINE * len(self.rows) + 6

    def row_y(self, column_name: str) -> int:
        names = [column.name for column in self.rows]
        index = names.index(column_name) if column_name in names else 0
        return self.y + HEADER + LINE * index + LINE // 2 + 2


def _depths(tables: list[Any]) -> dict[str, int]:
    """Longest foreign-key path from each table to one that references nothing (cycles cut)."""
    by_name = {table.fullname: table for table in tables}
    depths: dict[str, int] = {}

    def depth(name: str, seen: frozenset[str]) -> int:
        if name in depths:
            return depths[name]
        targets = {fk.column.table.fullname for fk in by_name[name].foreign_keys} - {name}
        found = 1 + max((depth(t, seen | {name}) for t in targets if t in by_name and t not in seen), default=-1)
        depths[name] = found
        return found

    for name in sorted(by_name):
        depth(name, frozenset())
    return depths


def layout(tables: list[Any], links: dict[str, str]) -> tuple[list[Box], int, int]:
    depths = _depths(tables)
    boxes = [Box(table, links.get(table.fullname), depths[table.fullname], rows=list(table.columns))
             for table in sorted(tables, key=lambda t: t.fullname)]
    heights: dict[int, int] = {}
    for box in boxes:
        box.x = MARGIN + box.depth * (BOX_WIDTH + COLUMN_GAP)
        box.y = MARGIN + heights.get(box.depth, 0)
        heights[box.depth] = heights.get(box.depth, 0) + box.height + ROW_GAP
    width = MARGIN * 2 + (max((b.depth for b in boxes), default=0) + 1) * (BOX_WIDTH + COLUMN_GAP) - COLUMN_GAP
    height = MARGIN * 2 + max(heights.values(), default=0)
    return boxes, width, height


def _type(column: Any) -> str:
    try:
        text = str(column.type.compile())
    except Exception:  # noqa: BLE001 - a type without a default compilation (a custom one) is named by class
        text = type(column.type).__name__
    return text.lower() if len(text) <= MAX_TYPE_CHARS else text[:MAX_TYPE_CHARS - 1].lower() + "…"


def render_svg(tables: list[Any], links: dict[str, str]) -> Markup:
    boxes, width, height = layout(tables, links)
    where = {box.table.fullname: box for box in boxes}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="celora-diagram" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12" role="img" '
             f'aria-label="Schema diagram: {len(boxes)} tables">',
             '<defs><marker id="celora-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#667"/></marker>'
             '</defs>']
    edges = []
    for box in boxes:
        for fk in sorted(box.table.foreign_keys, key=lambda fk: (fk.parent.name, fk.target_fullname)):
            target = where.get(fk.column.table.fullname)
            if target is None:
                continue
            edges.append(_edge(box, fk.parent.name, target, fk.column.name, fk))
    parts += edges
    for box in boxes:
        parts.append(_box(box))
    parts.append("</svg>")
    return Markup("".join(parts))


def _edge(source: Box, source_column: str, target: Box, target_column: str, fk: Any) -> str:
    y1, y2 = source.row_y(source_column), target.row_y(target_column)
    label = escape(f"{source.table.name}.{source_column} -> {target.table.name}.{target_column}")
    if target is source or target.depth >= source.depth:
        # A self-reference (or a cycle cut): a loop out of the right side and back.
        x1 = source.x + BOX_WIDTH
        x2 = target.x + BOX_WIDTH
        bend = max(x1, x2) + 40
        d = f"M{x1},{y1} C{bend},{y1} {bend},{y2} {x2},{y2}"
    else:
        x1, x2 = source.x, target.x + BOX_WIDTH
        middle = (x1 + x2) / 2
        d = f"M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}"
    return (f'<path class="celora-edge" data-from="{escape(source.table.name)}.{escape(source_column)}" '
            f'data-to="{escape(target.table.name)}.{escape(target_column)}" d="{d}" fill="none" stroke="#667" '
            f'stroke-width="1.3" marker-end="url(#celora-arrow)"><title>{label}</title></path>')


def _box(box: Box) -> str:
    name = escape(box.table.name)
    title = (f'<text x="{box.x + 10}" y="{box.y + 19}" font-weight="bold" font-size="13" fill="#fff">{name}</text>')
    if box.link:
        title = f'<a href="{escape(box.link)}" class="celora-table-link">{title}</a>'
    parts = [f'<g class="celora-table" data-table="{name}">',
             f'<rect x="{box.x}" y="{box.y}" width="{BOX_WIDTH}" height="{box.height}" rx="5" fill="#fff" '
             'stroke="#206bc4"/>',
             f'<rect x="{box.x}" y="{box.y}" width="{BOX_WIDTH}" height="{HEADER}" rx="5" fill="#206bc4"/>', title]
    foreign = {fk.parent.name for fk in box.table.foreign_keys}
    for index, column in enumerate(box.rows):
        y = box.y + HEADER + LINE * (index + 1) - 2
        marks = ("PK " if column.primary_key else "") + ("FK" if column.name in foreign else "")
        weight = ' font-weight="bold"' if column.primary_key else ""
        parts.append(f'<text x="{box.x + 8}" y="{y}" fill="#b06000" font-size="10">{marks.strip()}</text>'
                     f'<text x="{box.x + 44}" y="{y}"{weight} class="celora-column" data-column="{escape(column.name)}"'
                     f' data-key="{marks.strip()}">{escape(column.name)}</text>'
                     f'<text x="{box.x + BOX_WIDTH - 8}" y="{y}" text-anchor="end" fill="#667">'
                     f'{escape(_type(column))}{"?" if column.nullable and not column.primary_key else ""}</text>')
    parts.append("</g>")
    return "".join(parts)


class DiagramView(CustomView):
    """/studio/-/diagram"""

    def __init__(self, metadata: Any, links: dict[str, str]) -> None:
        super().__init__(menu_label="Schema diagram", icon="fa fa-diagram-project", path="/-/diagram",
                         route_name="diagram")
        self.metadata = metadata
        self.links = links  # table fullname -> its list page
        self._svg: Markup | None = None

    @route("", methods=["GET"])
    async def index(self, request: Request) -> Response:
        if self._svg is None:  # the models do not change while the studio runs
            self._svg = render_svg(list(self.metadata.tables.values()), self.links)
        assert self._admin is not None
        return self._admin._template_response(request=request, name="studio/diagram.html",
                                              context={"title": "Schema diagram", "svg": self._svg,
                                                       "tables": len(self.metadata.tables)})
