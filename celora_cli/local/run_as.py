"""The OS user the local PostgreSQL runs as: PostgreSQL refuses to run as root, so when celora runs as root the
server runs as an unprivileged user (CELORA_PG_USER, else `postgres`, else `nobody`), who must be able to reach
the cluster's folder and the binaries."""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from pathlib import Path

from celora_cli.errors import ConfigError, LocalServerError


def default_run_as() -> str | None:
    """None when not root (run as ourselves); else an unprivileged user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise LocalServerError(
        "celora runs as root and found no unprivileged user (postgres, nobody) to run PostgreSQL as; "
        "PostgreSQL refuses to run as root.",
        "Create one (`useradd --system postgres`) or set CELORA_PG_USER to an existing unprivileged user.",
    )


def check_pg_user(name: str) -> None:
    """CELORA_PG_USER must be an existing, unprivileged user that celora can run programs as."""
    try:
        user = pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise ConfigError(
            f"CELORA_PG_USER={name!r} is not a user on this machine (celora runs the local PostgreSQL as "
            "that OS user when it runs as root).",
            f"Create it (`useradd --system {name}`), set CELORA_PG_USER to an existing unprivileged user "
            "(e.g. postgres), or unset it and let celora choose.",
        ) from None
    if user.pw_uid == 0:
        raise ConfigError(f"CELORA_PG_USER={name!r} is root, and PostgreSQL refuses to run as root.",
                          "Set CELORA_PG_USER to an unprivileged user (e.g. postgres), or unset it.")
    if os.geteuid() not in (0, user.pw_uid):
        raise ConfigError(
            f"CELORA_PG_USER={name!r} is another user, and only root can run the local PostgreSQL as "
            "another user.",
            "Unset CELORA_PG_USER (celora then runs the server as you), or run celora as root.")


def os_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise LocalServerError(
            f"The local PostgreSQL should run as the OS user {name!r}, which does not exist.",
            "Set CELORA_PG_USER to an existing unprivileged user (e.g. postgres), or create that user.",
        ) from None


def blocked_ancestor(path: Path, user: str) -> Path | None:
    """The first directory above `path` that `user` cannot search (None: all are searchable)."""
    uid = os_user(user).pw_uid
    for parent in Path(path).parents:
        info = parent.stat()
        if not info.st_mode & stat.S_IXOTH and info.st_uid != uid:
            return parent
    return None


def check_traversable(path: Path, user: str) -> None:
    parent = blocked_ancestor(path, user)
    if parent is not None:
        raise LocalServerError(
            f"The local PostgreSQL runs as the unprivileged user {user!r} (celora runs as root), "
            f"but {parent} is not searchable by that user, so it cannot reach {path}.",
            "Set CELORA_LOCAL_DIR to a directory outside it, e.g. CELORA_LOCAL_DIR=/var/tmp/celora, "
            f"or `chmod o+x {parent}`.",
        )
