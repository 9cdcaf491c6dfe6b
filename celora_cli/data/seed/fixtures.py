"""The Celora fixtures: TOML files in `fixtures/`, read and checked completely before anything is written.

One file per table (users.toml, wallets.toml, transactions.toml, notifications.toml), each an array of
tables named like the file (`[[users]]`). References use natural keys, never ids: a wallet's `user` is an
email, a transaction's `wallet` is an address on its `chain`, a notification's `user` is an email.
Every problem raises ConfigError naming the file and the place, e.g. `wallets.toml: wallets[2].address`
(0-based, like the array index).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from celora_cli.data.seed.chain_formats import ADDRESS_NORMALIZERS, TX_HASH_NORMALIZERS
from celora_cli.errors import ConfigError

FIXTURE_TABLES = ("users", "wallets", "transactions", "notifications")
CHAINS = ("celo", "ethereum", "bitcoin", "solana")
EVM_CHAINS = ("celo", "ethereum")
DIRECTIONS = ("incoming", "outgoing", "self")
TRANSACTION_STATUSES = ("pending", "confirmed", "failed", "dropped")
CHANNELS = ("push", "email", "in_app")
NOTIFICATION_STATUSES = ("pending", "sent", "delivered", "failed")
# Where a notification's fixture key lives in the row (the schema has no natural key for notifications).
SEED_KEY = "seed_key"
HINT = "Fix the fixture file (the README's `celora db seed` section and each file's header list the fields)."


class FixtureProblem(ValueError):
    """A value is wrong; the loader adds the file and place."""


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise FixtureProblem(f"expected text, got {_kind(value)}")
    if not value.strip():
        raise FixtureProblem("must not be empty")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise FixtureProblem(f"expected true or false, got {_kind(value)}")
    return value


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FixtureProblem(f"expected an integer, got {_kind(value)}")
    if value < 0:
        raise FixtureProblem("must not be negative")
    return value


def _small_int(value: Any) -> int:
    number = _non_negative_int(value)
    if number > 32767:
        raise FixtureProblem("must be at most 32767 (a smallint)")
    return number


def _amount(value: Any) -> Decimal:
    """Whole base units: a TOML integer, or a string of digits for values past 64 bits (wei overflows)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FixtureProblem(f"expected whole base units (an integer or a string of digits), got {_kind(value)}")
    if value < 0:
        raise FixtureProblem("must not be negative")
    if len(str(value)) > 78:
        raise FixtureProblem("has more than 78 digits (larger than any uint256)")
    return Decimal(value)


def _timestamp(value: Any) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise FixtureProblem(f"expected a TOML date-time such as 2026-11-20T09:14:05Z, got {_kind(value)}")
    if value.tzinfo is None:
        raise FixtureProblem("needs a UTC offset (write 2026-11-20T09:14:05Z, not 2026-11-20T09:14:05)")
    return value


def _table(value: Any) -> dict:
    if not isinstance(value, dict):
        raise FixtureProblem(f"expected a table such as {{ key = \"value\" }}, got {_kind(value)}")
    return _json_safe(value)


def _json_safe(value: Any) -> Any:
    """TOML dates inside a metadata table become ISO text: JSONB has no date type."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if _text(value) not in choices:
            raise FixtureProblem(f"{value!r} is not one of {', '.join(choices)}")
        return value
    return check


def _email(value: Any) -> str:
    text = _text(value)
    local, at, domain = text.partition("@")
    if not at or not local or "." not in domain or " " in text:
        raise FixtureProblem(f"{text!r} is not an email address")
    return text


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "text", list: "an array",
             dict: "a table", dt.datetime: "a date-time", dt.date: "a date", dt.time: "a time"}
    return names.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Field:
    check: Callable[[Any], Any]
    required: bool = False
    default: Any = None


# Per table: the fields a fixture may have. Optional fields that are absent take their default, so the
# fixture is the whole truth about the columns it manages: deleting `label` from a file clears the label.
SCHEMAS: dict[str, dict[str, Field]] = {
    "users": {
        "email": Field(_email, required=True),
        "firebase_uid": Field(_text, required=True),
        "email_verified": Field(_bool, default=False),
        "display_name": Field(_text),
        "photo_url": Field(_text),
        "phone_number": Field(_text),
        "disabled": Field(_bool, default=False),
        "metadata": Field(_table, default={}),
    },
    "wallets": {
        "user": Field(_email, required=True),
        "chain": Field(_one_of(CHAINS), required=True),
        "address": Field(_text, required=True),
        "label": Field(_text),
        "is_primary": Field(_bool, default=False),
        "metadata": Field(_table, default={}),
    },
    "transactions": {
        "chain": Field(_one_of(CHAINS), required=True),
        "wallet": Field(_text, required=True),
        "tx_hash": Field(_text, required=True),
        "direction": Field(_one_of(DIRECTIONS), required=True),
        "status": Field(_one_of(TRANSACTION_STATUSES), default="pending"),
        "from_address": Field(_text),
        "to_address": Field(_text),
        "amount": Field(_amount, required=True),
        "asset": Field(_text, required=True),
        "token_contract": Field(_text),
        "decimals": Field(_small_int, required=True),
        "fee": Field(_amount),
        "block_number": Field(_non_negative_int),
        "block_timestamp": Field(_timestamp),
        "confirmations": Field(_non_negative_int, default=0),
        "metadata": Field(_table, default={}),
    },
    "notifications": {
        "user": Field(_email, required=True),
        "key": Field(_text, required=True),
        "channel": Field(_one_of(CHANNELS), required=True),
        "type": Field(_text, required=True),
        "title": Field(_text, required=True),
        "body": Field(_text, required=True),
        "data": Field(_table, default={}),
        "status": Field(_one_of(NOTIFICATION_STATUSES), default="pending"),
        "read_at": Field(_timestamp),
        "sent_at": Field(_timestamp),
        "error": Field(_text),
    },
}


@dataclass(frozen=True)
class Fixtures:
    """Validated rows, values already in their stored form (lowercase EVM hex, Decimal amounts)."""

    directory: Path
    users: list[dict] = field(default_factory=list)
    wallets: list[dict] = field(default_factory=list)
    transactions: list[dict] = field(default_factory=list)
    notifications: list[dict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {table: len(getattr(self, table)) for table in FIXTURE_TABLES}


def load_fixtures(directory: Path) -> Fixtures:
    """Read and validate every fixture file; raises ConfigError (file and place) on the first problem."""
    if not directory.is_dir():
        raise ConfigError(f"The fixtures folder {directory} does not exist or is not a folder.",
                          "Run from the project root (it has fixtures/), or pass --fixtures DIR.")
    raw = {table: _read(directory, table) for table in FIXTURE_TABLES}
    rows = {table: [_row(directory, table, index, entry) for index, entry in enumerate(entries)]
            for table, entries in raw.items()}
    return _resolve_references(directory, rows)


def _display(directory: Path, table: str) -> str:
    path = directory / f"{table}.toml"
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _fail(directory: Path, table: str, place: str, problem: str) -> ConfigError:
    where = f"{_display(directory, table)}: {place}" if place else _display(directory, table)
    return ConfigError(f"{where}: {problem}. Nothing was written.", HINT)


def _read(directory: Path, table: str) -> list:
    path = directory / f"{table}.toml"
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise _fail(directory, table, "", f"the file is missing (the seed needs {', '.join(FIXTURE_TABLES)}"
                    " as .toml files; an empty file means no rows)") from None
    except OSError as exc:
        raise _fail(directory, table, "", f"cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise _fail(directory, table, "", "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:  # its message carries "(at line L, column C)"
        raise _fail(directory, table, "", f"TOML syntax error: {exc}") from None
    unknown = sorted(set(document) - {table})
    if unknown:
        raise _fail(directory, table, unknown[0], f"unknown top-level key (this file holds only [[{table}]] "
                    "entries)")
    entries = document.get(table, [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise _fail(directory, table, table, f"must be an array of tables, written [[{table}]]")
    return entries


def _row(directory: Path, table: str, index: int, entry: dict) -> dict:
    schema = SCHEMAS[table]
    place = f"{table}[{index}]"
    for name in entry:
        if name not in schema:
            raise _fail(directory, table, f"{place}.{name}",
                        f"unknown field (known: {', '.join(schema)})")
    row: dict[str, Any] = {}
    for name, spec in schema.items():
        if name not in entry:
            if spec.required:
                raise _fail(directory, table, f"{place}.{name}", "is required and missing")
            row[name] = spec.default
            continue
        try:
            row[name] = spec.check(entry[name])
        except FixtureProblem as exc:
            raise _fail(directory, table, f"{place}.{name}", str(exc)) from None
    try:
        _normalize_chain_values(table, row)
    except _PlacedProblem as exc:
        raise _fail(directory, table, f"{place}.{exc.field}", exc.problem) from None
    return row


class _PlacedProblem(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field, self.problem = field, problem


def _normalize(row: dict, name: str, normalizer: Callable[[str], str], what: str) -> None:
    if row[name] is None:
        return
    try:
        row[name] = normalizer(row[name])
    except ValueError as exc:
        raise _PlacedProblem(name, f"{row[name]!r} is not a valid {what}: {exc}") from None


def _normalize_chain_values(table: str, row: dict) -> None:
    """Addresses and hashes in their chain's format, converted to the stored form."""
    chain = row.get("chain")
    if chain is None:
        return
    address = ADDRESS_NORMALIZERS[chain]
    if table == "wallets":
        _normalize(row, "address", address, f"{chain} address")
    elif table == "transactions":
        _normalize(row, "wallet", address, f"{chain} address")
        _normalize(row, "tx_hash", TX_HASH_NORMALIZERS[chain], f"{chain} transaction hash")
        _normalize(row, "from_address", address, f"{chain} address")
        _normalize(row, "to_address", address, f"{chain} address")
        if row["token_contract"] is not None and chain not in EVM_CHAINS:
            raise _PlacedProblem("token_contract", f"only EVM chains ({', '.join(EVM_CHAINS)}) have token "
                                 "contracts here")
        _normalize(row, "token_contract", address, f"{chain} contract address")
        _check_direction(row)


# Which end of a transaction is the wallet's own address, by direction.
_OWN_ENDS = {"incoming": ("to_address",), "outgoing": ("from_address",), "self": ("from_address", "to_address")}


def _check_direction(row: dict) -> None:
    """A swapped from/to is the classic fixture mistake: the wallet's end must be its own address (when given)."""
    for end in _OWN_ENDS[row["direction"]]:
        if row[end] is not None and row[end] != row["wallet"]:
            raise _PlacedProblem(end, f"is not the wallet's own address {row['wallet']!r}, but the transaction is "
                                 f"{row['direction']} (swapped from_address and to_address?)")


def _resolve_references(directory: Path, rows: dict[str, list[dict]]) -> Fixtures:
    """Natural keys unique within the files, and every reference pointing at a fixture row."""
    def unique(table: str, key: Callable[[dict], Any], field_name: str, what: str) -> set:
        seen: dict[Any, int] = {}
        for index, row in enumerate(rows[table]):
            value = key(row)
            if value in seen:
                raise _fail(directory, table, f"{table}[{index}].{field_name}",
                            f"{what} {row[field_name]!r} is already used by {table}[{seen[value]}]")
            seen[value] = index
        return set(seen)

    emails = unique("users", lambda r: r["email"].lower(), "email", "the email")
    unique("users", lambda r: r["firebase_uid"], "firebase_uid", "the firebase_uid")
    wallets = unique("wallets", lambda r: (r["chain"], r["address"]), "address", "the address")
    unique("transactions", lambda r: (r["chain"], r["tx_hash"], r["wallet"]), "tx_hash",
           "the same transaction for this wallet")
    unique("notifications", lambda r: (r["user"].lower(), r["key"]), "key", "the key")

    primaries: dict[str, int] = {}
    for index, row in enumerate(rows["wallets"]):
        _check_user(directory, "wallets", index, row, emails)
        if row["is_primary"]:
            owner = row["user"].lower()
            if owner in primaries:
                raise _fail(directory, "wallets", f"wallets[{index}].is_primary",
                            f"{row['user']} already has a primary wallet, wallets[{primaries[owner]}] "
                            "(at most one per user)")
            primaries[owner] = index
    for index, row in enumerate(rows["transactions"]):
        if (row["chain"], row["wallet"]) not in wallets:
            raise _fail(directory, "transactions", f"transactions[{index}].wallet",
                        f"no {row['chain']} wallet {row['wallet']!r} in wallets.toml")
    for index, row in enumerate(rows["notifications"]):
        _check_user(directory, "notifications", index, row, emails)
        if SEED_KEY in row["data"]:
            raise _fail(directory, "notifications", f"notifications[{index}].data.{SEED_KEY}",
                        f"{SEED_KEY} is reserved: the seed stores the notification's key there")
    return Fixtures(directory=directory, **rows)


def _check_user(directory: Path, table: str, index: int, row: dict, emails: set) -> None:
    if row["user"].lower() not in emails:
        raise _fail(directory, table, f"{table}[{index}].user", f"no user {row['user']!r} in users.toml")
