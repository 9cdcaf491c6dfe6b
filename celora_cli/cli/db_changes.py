"""`celora db changes`: the change stream (logical decoding). Placeholder while the command is built."""

from __future__ import annotations
