"""Why a slow list page was slow, asked of PostgreSQL rather than guessed: the page's filter is EXPLAINed with
sequential scans disabled and its order with sorts disabled, so each plan uses every index that can help. What
still reads the whole table (a Seq Scan, an index walked end to end under a Filter, a Sort) is what no index of
this table serves: the sort, a substring filter, the all-column search. Each gets the index that would serve it, as the
`CREATE INDEX CONCURRENTLY` statement to paste into a migration.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, text

from celora_cli.data.studio.paging import OrderKey

# `(tx_hash)::text ~~* '%ab%'::text`: the column a LIKE (~~) or ILIKE (~~*) applies to, past its casts.
_LIKE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\)*(?:::[A-Za-z ]+?\)*)*\s+!?~~\*?\s")


@dataclass(frozen=True)
class Diagnosis:
    reason: str  # why every row is read
    statement: str | None = None  # the index that would make it instant
    requirement: str | None = None  # what the statement needs first (an extension)

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "statement": self.statement, "requirement": self.requirement}


def diagnose(session: Any, filtered: Select | None, ordered: Select, table: str, order: Sequence[OrderKey], *,
             searching: bool, searched_columns: int) -> list[Diagnosis]:
    """What reads the whole of `table` on this page, each with its cure. Two questions, each EXPLAINed with the
    alternative disabled: can an index find the rows `filtered` (the page's WHERE, no order) selects, and can
    one give `ordered` (the page's order, no WHERE) without a Sort. A sort over rows an index found is a sort of
    those rows only; a sort (or a filter walked along the order's index) over an unindexed filter is the whole
    table."""
    name = table.rsplit(".", 1)[-1]
    found: list[Diagnosis] = []
    filter_unindexed = False
    user_sort = [key for key in order if not key.column.primary_key]
    asked = ([(filtered, "enable_seqscan")] if filtered is not None else []) + \
        ([(ordered, "enable_sort")] if user_sort else [])
    plans = _plans(session, asked)
    if filtered is not None:
        nodes = list(_nodes(plans.pop(0)))
        whole = [node for node in nodes if node.get("Relation Name") == name and (
            node["Node Type"] == "Seq Scan"
            or (node["Node Type"] in ("Index Scan", "Index Only Scan") and "Index Cond" not in node))]
        filter_unindexed = bool(whole)
        if whole and searching:
            found.append(Diagnosis(
                f"The search looks for the text in every text column ({searched_columns}) of every row: no index "
                "serves that. A `contains` filter on the one column you mean is instant with a trigram index on "
                "it."))
        elif whole:
            filters = " ".join(node.get("Filter", "") for node in whole)
            for column in dict.fromkeys(_LIKE.findall(filters)):
                found.append(Diagnosis(
                    f"`{column}` contains ...: a substring match, which a B-tree index cannot serve, so every row "
                    "is read.", f"CREATE INDEX CONCURRENTLY {_name(table, [column], 'trgm')} ON {table} USING gin "
                    f"({_quote(column)} gin_trgm_ops);", _trigram_requirement(session)))
            if not found:
                found.append(Diagnosis("No index serves this page's filter, so every row is read until a page of "
                                       "matches is found."))
    if user_sort and (filtered is None or filter_unindexed):
        unsorted = any(node["Node Type"] == "Sort" for node in _nodes(plans.pop(0)))
        if unsorted:
            columns = ", ".join(key.column.name for key in user_sort)
            found.append(Diagnosis(
                f"Sorted by {columns}: no index serves this order, so every row is read and sorted for each page.",
                f"CREATE INDEX CONCURRENTLY {_name(table, [key.column.name for key in order])} ON {table} "
                f"({_index_columns(order)});"))
    return found


def _plans(session: Any, asked: list[tuple[Select, str]]) -> list[dict[str, Any]]:
    """Each query's plan (not run) with its planner setting off, in one round trip: the statements go as one
    simple-protocol string (no parameters: the values are rendered as literals), inside a savepoint whose
    rollback takes the settings away again."""
    if not asked:
        return []
    bind = session.get_bind()
    statements = []
    for query, disabled in asked:
        compiled = query.compile(bind, compile_kwargs={"literal_binds": True})
        statements.append(f"SET LOCAL enable_seqscan = on; SET LOCAL enable_sort = on; SET LOCAL {disabled} = off; "
                          f"EXPLAIN (FORMAT JSON) {compiled}")
    nested = session.begin_nested()
    try:
        cursor = session.connection().connection.cursor()
        try:
            cursor.execute("; ".join(statements))
            plans = []
            while True:
                if cursor.description is not None and cursor.description[0].name == "QUERY PLAN":
                    plans.append(cursor.fetchone()[0][0]["Plan"])
                if not cursor.nextset():
                    return plans
        finally:
            cursor.close()
    finally:
        nested.rollback()  # the planner settings go with it


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _index_columns(order: Sequence[OrderKey]) -> str:
    # A B-tree is walked both ways: one whose directions all agree serves the order and its reverse alike.
    if len({key.descending for key in order}) == 1:
        return ", ".join(_quote(key.column.name) for key in order)
    return ", ".join(_quote(key.column.name) + (" DESC" if key.descending else "") for key in order)


def _name(table: str, columns: list[str], suffix: str = "") -> str:
    name = "_".join(["ix", table.rsplit(".", 1)[-1], *columns] + ([suffix] if suffix else []))
    return _quote(name[:63])


def _quote(identifier: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_]*", identifier):
        return identifier
    return '"' + identifier.replace('"', '""') + '"'


def _trigram_requirement(session: Any) -> str:
    installed = session.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first()
    if installed:
        return "pg_trgm is installed in this database."
    available = session.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first()
    return ("Needs the pg_trgm extension, not installed in this database: CREATE EXTENSION pg_trgm; (in a "
            "migration" + (")." if available else "; the server does not ship it: install PostgreSQL's contrib "
                                                    "package)."))
