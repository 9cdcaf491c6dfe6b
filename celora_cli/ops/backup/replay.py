"""Replaying an archive into a database: pg_restore straight into it, or through psql for an older server.

pg_restore connects itself when its major version is the server's (or older): exactly what pg_restore does by
hand, in one transaction (--single-transaction --exit-on-error).

A newer pg_restore opens its session with settings an older server may not have: since 17 it sends
`SET transaction_timeout = 0`, and PostgreSQL 14-16 reject it ("unrecognized configuration parameter"), which
ends a --single-transaction restore before it starts. The statement cannot be left out with an option, and it is
sent before any archive entry. So against an older server celora asks pg_restore for the SQL script instead
(`--file=-`, the same statements pg_restore would send, BEGIN and COMMIT included) and pipes it into psql of the
same release with ON_ERROR_STOP, leaving out only the opening `SET <name>_timeout = 0` lines whose setting the
server does not know: a timeout the server does not have cannot fire, so there is nothing to switch off. Only
the opening block (before the first archive entry) is looked at; everything after it, the data included, is
passed on byte for byte. Anything else the server rejects still fails the restore, with psql's message.
celora's restore runs in one session either way (--single-transaction), so the script costs no parallelism.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import IO

# The opening block of pg_restore's script: comments, \restrict, BEGIN, and the session settings.
_OPENING = re.compile(rb"^(\s*$|--|\\restrict |\\unrestrict |BEGIN;|SET |SELECT pg_catalog\.set_config\()")
_TIMEOUT_OFF = re.compile(rb"^SET ([a-z_]+_timeout) = 0;\s*$")
_CHUNK = 1 << 20


@dataclass
class Replay:
    returncode: int
    stderr: str
    through_psql: bool = False
    skipped: list[str] = field(default_factory=list)  # settings left out of the script


def direct(pg_restore: str, file: str, dbname: str, env: dict[str, str]) -> Replay:
    args = [pg_restore, "--no-password", "--exit-on-error", "--single-transaction", "--no-owner",
            f"--dbname={dbname}", file]
    result = subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            errors="replace", check=False)
    return Replay(result.returncode, (result.stderr or result.stdout or "").strip())


def through_psql(pg_restore: str, psql: str, file: str, dbname: str, env: dict[str, str],
                 known_settings: set[str]) -> Replay:
    """pg_restore --file=- | (opening block filtered) | psql ON_ERROR_STOP. Fails if either fails."""
    restore_err = tempfile.TemporaryFile()
    psql_err = tempfile.TemporaryFile()
    restore = psql_process = None
    skipped: list[str] = []
    try:
        restore = subprocess.Popen([pg_restore, "--single-transaction", "--no-owner", "--file=-", file], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=restore_err)
        psql_process = subprocess.Popen(
            [psql, "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1", f"--dbname={dbname}",
             "--file=-"], env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_err)
        assert restore.stdout is not None and psql_process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # psql stopped at an error: its exit status says so
            skipped = _pass_on(restore.stdout, psql_process.stdin, known_settings)
        with contextlib.suppress(BrokenPipeError):
            psql_process.stdin.close()
        psql_code = psql_process.wait()
        if psql_code != 0 and restore.poll() is None:
            restore.kill()  # nobody reads its output any more
        restore_code = restore.wait()
    finally:
        for process in (restore, psql_process):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    messages = [_read(psql_err), _read(restore_err)]
    if psql_code != 0:
        return Replay(psql_code, messages[0] or messages[1], True, skipped)
    if restore_code != 0:  # psql saw an incomplete script: no COMMIT, so nothing was kept
        return Replay(restore_code, messages[1] or messages[0], True, skipped)
    return Replay(0, "", True, skipped)


def _pass_on(source: IO[bytes], target: IO[bytes], known_settings: set[str]) -> list[str]:
    """Copy source to target, leaving out `SET x_timeout = 0;` lines of the opening block for settings the
    server does not know. Returns their names."""
    skipped = []
    for line in iter(source.readline, b""):
        if not _OPENING.match(line):
            target.write(line)
            break
        match = _TIMEOUT_OFF.match(line)
        if match and match.group(1).decode() not in known_settings:
            skipped.append(match.group(1).decode())
            continue
        target.write(line)
    shutil.copyfileobj(source, target, _CHUNK)
    return skipped


def _read(handle) -> str:
    handle.seek(0)
    text = handle.read().decode(errors="replace").strip()
    handle.close()
    return text
