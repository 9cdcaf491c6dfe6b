"""As root, celora hands the local cluster's folder to the unprivileged server user and keeps writing its own files
there (server.json, the lock, the log). That user can plant symbolic links where celora writes: celora must never
write, truncate or chown through them. Each test plants links to files outside (root's, with known content, owner
and mode) and runs the real operation."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from celora_cli.errors import LocalServerError
from celora_cli.local.run_as import os_user
from celora_cli.local.server import LocalServer
from tests.support import shared_tmpdir

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the server user and root differ only when run as root"),
              pytest.mark.db]  # the tests start a PostgreSQL of their own, outside the session's fixtures


def victim(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text(f"{name}: root's, not to be touched\n")
    path.chmod(0o640)
    return path


def fingerprint(path: Path) -> tuple:
    info = os.lstat(path)
    return path.read_bytes(), info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode), info.st_size


@pytest.fixture
def cluster_dir():
    base = shared_tmpdir("celora-test-plant-")
    yield base / "cluster"
    shutil.rmtree(base, ignore_errors=True)


def test_links_planted_where_the_local_server_writes_are_replaced_and_their_targets_untouched(tmp_path, cluster_dir):
    server = LocalServer(cluster_dir, fast=True, database="postgres")
    assert server.run_as is not None
    cluster_dir.mkdir()
    targets = {name: victim(tmp_path, name) for name in ("server.json", "lock", "postgres.log")}
    before = {name: fingerprint(path) for name, path in targets.items()}
    for name, target in targets.items():
        (cluster_dir / name).symlink_to(target)  # what the server user could do in its own folder
    try:
        url = server.ensure_running()  # initdb, start: writes server.json, opens the lock, hands over the log
        assert url.startswith("postgresql://celora@127.0.0.1:")
        for name, path in targets.items():
            assert fingerprint(path) == before[name], name
            assert not (cluster_dir / name).is_symlink() and (cluster_dir / name).is_file(), name
        user = os_user(server.run_as)
        assert (cluster_dir / "postgres.log").stat().st_uid == user.pw_uid  # the new log is the server's
        assert server.port is not None and server.is_running()
    finally:
        server.destroy()


def test_a_link_planted_as_the_data_folder_is_refused_and_its_target_keeps_its_owner(tmp_path, cluster_dir):
    outside = tmp_path / "etc-like"
    outside.mkdir(mode=0o700)
    keep = victim(outside, "shadow-like")
    before = os.stat(outside).st_uid, stat.S_IMODE(os.stat(outside).st_mode), fingerprint(keep)
    server = LocalServer(cluster_dir, fast=True, database="postgres")
    cluster_dir.mkdir()
    server.data_dir.symlink_to(outside)
    with pytest.raises(LocalServerError) as refused:
        server.ensure_running()
    assert f"{server.data_dir} is a symbolic link (to {outside})" in refused.value.message
    assert f"rm {server.data_dir}" in (refused.value.hint or "")
    assert (os.stat(outside).st_uid, stat.S_IMODE(os.stat(outside).st_mode), fingerprint(keep)) == before


def test_a_log_planted_as_a_link_is_never_read_into_an_error(tmp_path, cluster_dir):
    """An error shows the log's last lines: read through a link, a root-only file would be printed."""
    secret = victim(tmp_path, "root-only")
    server = LocalServer(cluster_dir, fast=True, database="postgres")
    cluster_dir.mkdir()
    server.log_file.symlink_to(secret)
    assert "root's" not in server._log_tail()
    (cluster_dir / "pgdata").mkdir()
    (cluster_dir / "pgdata" / "PG_VERSION").symlink_to(secret)  # named in messages as the cluster's version
    assert server._cluster_version() is None
