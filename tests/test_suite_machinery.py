"""The suite on a bare machine (tests/conftest.py): a test that needs a program that is not installed is skipped,
with one line at the end naming what to install; under CI or CELORA_TEST_STRICT it fails the run instead. And a
run started in the background (SIGINT ignored, as a shell does for `make test &`) still gives the processes
its tests start SIGINT at its default, so the tests that stop celora with Ctrl-C's signal work there too.

Each case runs a small pytest session of its own, loading tests/conftest.py as a plugin; no database is
started (the probe's tests ask for no server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support import REPO

PROBE = '''
import signal
import subprocess
import sys


def test_plain():
    pass


def test_needs_pgbouncer(pgbouncer_binary):
    assert pgbouncer_binary


def test_needs_a_browser(chromium_binaries):
    assert all(chromium_binaries)


def test_needs_pgbouncer_through_a_second_import_of_the_conftest():
    # Test modules import helpers as tests.conftest while pytest loaded the file as conftest: a second module
    # object, whose program() must see the same settings and whose skip the summary must count.
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("second_conftest", Path({conftest!r}))
    second = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(second)
    assert second.program("pgbouncer")


def test_a_child_hears_sigint():
    child = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGINT)"],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode != 0 and "KeyboardInterrupt" in child.stderr, child
'''


def run_probe(tmp_path, *, hide: str = "", strict: dict | None = None, ignore_sigint: bool = False):
    (tmp_path / "test_probe.py").write_text(PROBE.replace("{conftest!r}", repr(str(REPO / "tests" / "conftest.py"))))
    env = {k: v for k, v in os.environ.items() if k not in ("CI",) and not k.startswith("CELORA_")}
    env.update({"PYTHONPATH": str(REPO), "CELORA_TEST_HIDE_PROGRAMS": hide, **(strict or {})})

    def as_a_background_job() -> None:
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "-ra", "-q", "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
                          preexec_fn=as_a_background_job)


def summary_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("celora: ")]


def test_missing_programs_are_skipped_with_one_line_naming_what_to_install(tmp_path):
    probe = run_probe(tmp_path, hide="pgbouncer,chromium,chromedriver")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "2 passed, 3 skipped" in probe.stdout, probe.stdout
    (line,) = summary_lines(probe.stdout)
    assert "3 test(s) skipped" in line and line.endswith("apt-get install pgbouncer chromium chromium-driver")


def test_only_the_missing_program_is_named(tmp_path):
    probe = run_probe(tmp_path, hide="chromedriver")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "4 passed, 1 skipped" in probe.stdout, probe.stdout
    (line,) = summary_lines(probe.stdout)
    assert line.endswith("chromedriver not installed; to run them: apt-get install chromium-driver"), line


@pytest.mark.parametrize("strict", [{"CI": "true"}, {"CELORA_TEST_STRICT": "1"}], ids=["CI", "CELORA_TEST_STRICT"])
def test_under_ci_a_missing_program_fails_the_run(tmp_path, strict):
    probe = run_probe(tmp_path, hide="pgbouncer", strict=strict)
    assert probe.returncode != 0, probe.stdout
    assert "pgbouncer is not installed (apt-get install pgbouncer); with CI or CELORA_TEST_STRICT set" \
        in probe.stdout, probe.stdout
    (line,) = summary_lines(probe.stdout)
    assert "2 test(s) failed" in line and line.endswith("apt-get install pgbouncer")


def test_ci_false_is_not_ci(tmp_path):
    probe = run_probe(tmp_path, hide="pgbouncer", strict={"CI": "false"})
    assert probe.returncode == 0, probe.stdout


def test_a_run_started_in_the_background_still_gives_children_sigint(tmp_path):
    probe = run_probe(tmp_path, ignore_sigint=True)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "test_a_child_hears_sigint" not in probe.stdout  # neither failed nor skipped
