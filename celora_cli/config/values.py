"""Parsers for settings' values: booleans, numbers, seconds within limits, sizes, UTF-8 text.

Every one raises ConfigError naming the setting (or flag, or library argument) the value came from.
"""

from __future__ import annotations

import math
import re

from celora_cli.errors import ConfigError


def parse_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}.", "Use true or false.")


def parse_number(value, kind, name, maximum=None):
    if value is None or value == "":
        return None
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {value!r}.", "Use a plain number, e.g. 5.") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, not {value!r}.", "Use a plain number, e.g. 5.")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name} must be at most {maximum} (got {value!r}).", f"Use a number up to {maximum}.")
    if number < 0:
        raise ConfigError(f"{name} must not be negative (got {value!r}).", "Use a number of 0 or more.")
    return number


def validate_seconds(value, name: str, *, minimum: float, maximum: float) -> float:
    """A number of seconds from the environment (a string), a flag or a library argument, within limits.

    `name` is what the user wrote (CELORA_HEALTH_TIMEOUT, --timeout, check_database_health(timeout=...)).
    """
    fix = f"Use a number of seconds from {minimum:g} to {maximum:g}."
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}.", fix)
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}.", fix) from None
    if not math.isfinite(seconds):
        raise ConfigError(f"{name} must be a finite number of seconds, not {value!r}.", fix)
    if not minimum <= seconds <= maximum:
        raise ConfigError(f"{name} must be from {minimum:g} to {maximum:g} seconds, not {value!r}.", fix)
    return seconds



_BYTE_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "tb": 1024 ** 4}


def parse_bytes(value: str, name: str) -> int:
    """A size like 512MB, 1GB or 1048576 (bytes); units are powers of 1024, as PostgreSQL's own settings."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _BYTE_UNITS:
        raise ConfigError(f"{name} must be a size such as 512MB, 1GB or a number of bytes, not {value!r}.",
                          "Use a whole number with an optional unit: B, kB, MB, GB or TB.")
    size = float(match.group(1)) * _BYTE_UNITS[unit]
    if size > 1024 ** 5:
        raise ConfigError(f"{name} must be at most 1024TB (got {value!r}).", "Use a smaller size, e.g. 10GB.")
    return int(size)


def utf8_text(value: str | None, name: str) -> str | None:
    """A setting that must be text (a user name): os.environ keeps undecodable bytes as lone surrogates."""
    if value is not None and not is_utf8(value):
        raise ConfigError(f"{name} contains bytes that are not UTF-8 text.", f"Set {name} as UTF-8 text.")
    return value


def is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
