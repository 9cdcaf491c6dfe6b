"""Files celora writes, chowns or reads as root in a folder the local server's unprivileged user can write to.

As root, celora hands `.celora/` (or CELORA_LOCAL_DIR) and PgBouncer's runtime folder to the server user
(PostgreSQL and PgBouncer refuse root), then keeps writing its own files there. That user can plant a symbolic
link (or a hard link) where celora writes: `.celora/server.json -> /etc/shadow` would have root truncate it, and
`postgres.log -> /etc/shadow` would have root hand it to the user with chown. So nothing here follows a link:
- a file celora writes is a new file: the old name is removed (a planted link goes, its target untouched) and
  the file is created with O_CREAT|O_EXCL|O_NOFOLLOW, which fails rather than write through a link planted in
  between; it is chowned and chmodded through its descriptor, never by name;
- a file or folder celora chowns is opened with O_NOFOLLOW first and chowned through the descriptor; a link
  there is refused with a clear error (a folder: it may hold data) or replaced (a log file);
- a file celora reads (a port, a pid, a log tail shown in an error) is opened with O_NOFOLLOW|O_NONBLOCK (a
  planted FIFO does not hang it) and must be a regular file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from celora_cli.errors import LocalServerError

_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
READ_LIMIT = 1024 * 1024  # a port, a pid, an env file, a log's tail: a planted huge file is not read whole


def _planted(path: Path, what: str) -> LocalServerError:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return LocalServerError(
        f"{path} is a symbolic link{target} or not a plain {what}; celora runs as root there and does not write "
        "or chown through links in a folder the local server's user can write to, so it changed nothing.",
        f"Remove it (`rm {path}`) and run the command again; celora recreates its own {what}.")


def write_new(path: Path, text: str, *, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """`path` replaced by a new file holding `text`, `mode` from its creation, owned by `owner` (uid, gid)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # removes a planted link itself, never its target
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode & 0o600)
    except FileExistsError:  # planted again between the unlink and the open: refused, nothing written
        raise _planted(path, "file") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        if owner is not None:
            os.fchown(descriptor, *owner)
        os.fchmod(descriptor, mode)  # only now wider than 0600, and exactly `mode` whatever the umask
        handle.write(text)


def own_file(path: Path, owner: tuple[int, int]) -> None:
    """`path` exists as a plain file owned by `owner`: an existing one is chowned through its descriptor; a
    link, a hard-linked file or anything else at that name is replaced by a new empty file (what is in it is a
    log celora writes, not data)."""
    try:
        descriptor = _open_plain(path, os.O_RDONLY)
    except FileNotFoundError:
        descriptor = None
    if descriptor is None:
        write_new(path, "", mode=0o600, owner=owner)  # removes whatever was there first
        return
    try:
        os.fchown(descriptor, *owner)
    finally:
        os.close(descriptor)


def own_directory(path: Path, owner: tuple[int, int] | None, *, mode: int | None = None,
                  create: bool = False) -> None:
    """Chown (and chmod) the folder `path` through its descriptor, creating it first with `create`; a link there
    is refused (a folder may hold data)."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _planted(path, "folder") from None
        raise
    try:
        if owner is not None:
            os.fchown(descriptor, *owner)
        if mode is not None:
            os.fchmod(descriptor, mode)
    finally:
        os.close(descriptor)


def open_lock_file(path: Path) -> int:
    """A descriptor on the lock file `path` (created if missing, never truncated); a link there is replaced."""
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | _NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            return descriptor
        os.close(descriptor)
        break
    raise _planted(path, "file")


def read_text(path: Path, *, owner: int | None = None) -> str:
    """The text of the plain file `path` (at most READ_LIMIT bytes); OSError when it is missing, a link, not a
    plain file, or (with `owner`) owned by another user."""
    descriptor = _open_plain(path, os.O_RDONLY)
    if descriptor is None:
        raise OSError(errno.ELOOP, "not a plain file", str(path))
    with os.fdopen(descriptor, "rb") as handle:
        if owner is not None and os.fstat(descriptor).st_uid != owner:
            raise OSError(errno.EPERM, "owned by another user", str(path))
        return handle.read(READ_LIMIT).decode("utf-8", errors="replace")


def _open_plain(path: Path, flags: int) -> int | None:
    """A descriptor on `path` when it is a plain file with one name; None when it is a link or anything else;
    FileNotFoundError when it is missing."""
    try:
        descriptor = os.open(path, flags | os.O_NONBLOCK | _NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.ENOTDIR):
            return None
        raise
    info = os.fstat(descriptor)
    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
        return descriptor
    os.close(descriptor)
    return None
