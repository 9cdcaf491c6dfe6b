"""celora: the Celora app's database toolkit, as a library.

    from celora_cli import check_database_health, get_engine, session_scope, with_retry

    with session_scope(read_only=True) as session:  # a replica in CELORA_REPLICA_URLS, else the primary
        ...

Names load lazily so that importing celora_cli (and `celora --help`) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Settings": "celora_cli.config.settings",
    "load_settings": "celora_cli.config.settings",
    "mask_url": "celora_cli.config.settings",
    "check_database_health": "celora_cli.ops.health",
    "HealthReport": "celora_cli.ops.health",
    "get_engine": "celora_cli.db.engine",
    "get_direct_engine": "celora_cli.db.engine",
    "session_scope": "celora_cli.db.engine",
    "get_read_router": "celora_cli.db.engine",
    "with_retry": "celora_cli.db.retry",
    "retry_call": "celora_cli.db.retry",
    "is_transient": "celora_cli.db.retry",
    "deploy": "celora_cli.migrate.deploy",
    "migration_status": "celora_cli.migrate.status",
    "LocalServer": "celora_cli.local.server",
    "CeloraError": "celora_cli.errors",
    "ExitCode": "celora_cli.errors",
    "ReadOnlySessionError": "celora_cli.db.replicas",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'celora_cli' has no attribute {name!r}")
