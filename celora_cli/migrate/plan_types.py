"""Whether ALTER COLUMN ... TYPE rewrites the table: the old and new types compared as PostgreSQL's binary
coercions and length-coercion shortcuts allow (for `migrate-deploy --plan`). Pure: the old type is given, as
format_type() writes it.
"""

from __future__ import annotations

import re

_ALIASES = {
    "varchar": "character varying", "char": "character", "bpchar": "character", "int": "integer",
    "int4": "integer", "int8": "bigint", "int2": "smallint", "bool": "boolean", "float8": "double precision",
    "float4": "real", "decimal": "numeric", "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone", "timetz": "time with time zone", "time": "time without time zone",
    "varbit": "bit varying",
}


def normalise_type(text: str) -> str:
    """A type as format_type() writes it: varchar(20) -> character varying(20), TIMESTAMPTZ -> timestamp with
    time zone, quotes and spaces tidied."""
    value = re.sub(r"\s+", " ", text.strip().strip(";").lower().replace('"', ""))
    value = re.sub(r"\s*\(\s*", "(", value)
    value = re.sub(r"\s*,\s*", ",", value)
    value = re.sub(r"\s*\)", ")", value)
    match = re.fullmatch(r"(timestamp|time)(\(\d+\))? (with|without) time zone", value)
    if match:
        return f"{match.group(1)}{match.group(2) or ''} {match.group(3)} time zone"
    match = re.fullmatch(r"([a-z_][a-z0-9_ ]*?)(\([\d,]+\))?(\[\])?", value)
    if match is None:
        return value
    base, modifier, array = match.group(1).strip(), match.group(2) or "", match.group(3) or ""
    base = _ALIASES.get(base, base)
    if base in ("timestamp without time zone", "timestamp with time zone", "time without time zone",
                "time with time zone") and modifier:
        head, _, zone = base.partition(" ")
        return f"{head}{modifier} {zone}{array}"
    return f"{base}{modifier}{array}"


def _modifiers(value: str) -> tuple[str, list[int]]:
    match = re.search(r"\(([\d,]+)\)", value)
    if match is None:
        return value, []
    return (value[:match.start()] + value[match.end():]).strip(), [int(n) for n in match.group(1).split(",")]


def binary_coercible(old: str, new: str) -> bool:
    """Whether ALTER COLUMN ... TYPE from `old` to `new` keeps every stored value as it is (no rewrite): the
    same type, a wider varchar or varbit, varchar to text, a numeric of more precision and the same scale, a
    timestamp/time/interval of more fractional digits, cidr to inet. Anything else is assumed to rewrite
    (timestamp to timestamptz does not when the session's TimeZone is UTC, which this does not know)."""
    old_base, old_mod = _modifiers(normalise_type(old))
    new_base, new_mod = _modifiers(normalise_type(new))
    if (old_base, old_mod) == (new_base, new_mod):
        return True
    text_like = {"character varying", "text"}
    if old_base in text_like and new_base in text_like:
        if new_base == "text" or not new_mod:
            return True
        return old_base == "character varying" and bool(old_mod) and new_mod[0] >= old_mod[0]
    if old_base == new_base == "bit varying":
        return not new_mod or (bool(old_mod) and new_mod[0] >= old_mod[0])
    if old_base == new_base == "numeric":
        if not new_mod:
            return True
        if not old_mod:
            return False
        old_scale = old_mod[1] if len(old_mod) > 1 else 0
        new_scale = new_mod[1] if len(new_mod) > 1 else 0
        return new_scale == old_scale and new_mod[0] >= old_mod[0]
    if old_base == new_base and old_base.split(" ")[0] in ("timestamp", "time", "interval"):
        return not new_mod or (bool(old_mod) and new_mod[0] >= old_mod[0])
    return (old_base, new_base) == ("cidr", "inet")
