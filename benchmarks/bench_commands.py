"""Whole commands against plain Alembic on the same database, in the same run (issue: fast paths).

Targets (median of several runs, each a fresh process, as a user types them):
- `celora db health` and `celora db status`: at most 0.5x `alembic current` on the same database;
- `celora db migrate-deploy` of 200 generated migrations from empty: at most 1.1x `alembic upgrade head` on
  the same files (each run on a new empty database, created outside the timed part).

Plain Alembic runs with a throwaway alembic.ini pointing at the same migrations folder, so it uses the same
env.py (celora's settings, the direct URL) as `celora`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _timing import PYTHON, command, paired_seconds, report

REPO = Path(__file__).resolve().parent.parent
RUNS = 9
DEPLOY_RUNS = 12
GENERATED = 200

MIGRATION = '''"""generated {index}"""
from alembic import op

revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE bench_{index} (id bigint PRIMARY KEY, note text)")


def downgrade() -> None:
    op.execute("DROP TABLE bench_{index}")
'''


def generated_history(root: Path) -> Path:
    """A migrations folder (the project's env.py) holding 200 small revisions."""
    target = root / "migrations200"
    (target / "versions").mkdir(parents=True)
    for name in ("env.py", "script.py.mako"):
        shutil.copy(REPO / "migrations" / name, target / name)
    down = None
    for index in range(GENERATED):
        revision = f"{index:04d}b3c4d5e6"
        (target / "versions" / f"2026010100{index:04d}_gen_{index}.py").write_text(
            MIGRATION.format(index=index, revision=revision, down=down))
        down = revision
    return target


def alembic_ini(root: Path, migrations: Path, name: str) -> Path:
    ini = root / name
    ini.write_text(f"[alembic]\nscript_location = {migrations}\n")
    return ini


def timed(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    return time.perf_counter() - started


def main() -> int:
    from celora_cli.local.server import LocalServer

    base = Path(tempfile.mkdtemp(prefix="celora-bench-cmd-"))
    base.chmod(0o755)
    server = LocalServer(base / ".celora", fast=True, database="postgres")
    try:
        server.ensure_running()
        url = server.create_database("bench_head")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELORA_") and k != "DIRECT_DATABASE_URL"}
        env.update({"DATABASE_URL": url, "CELORA_PROJECT_ROOT": str(REPO), "PYTHONPATH": str(REPO)})
        subprocess.run([PYTHON, "-m", "celora_cli", "db", "migrate-deploy"], check=True, env=env, cwd=REPO,
                       stdout=subprocess.DEVNULL)
        ini = alembic_ini(base, REPO / "migrations", "alembic.ini")

        alembic_current = command(PYTHON, "-m", "alembic", "-c", str(ini), "current", env=env)
        health = paired_seconds(command(PYTHON, "-m", "celora_cli", "db", "health", env=env), alembic_current, RUNS)
        status = paired_seconds(command(PYTHON, "-m", "celora_cli", "db", "status", env=env), alembic_current, RUNS)

        history = generated_history(base)
        ini200 = alembic_ini(base, history, "alembic200.ini")
        celora_runs, alembic_runs, ratios = [], [], []
        for run in range(DEPLOY_RUNS + 1):  # the first pair warms the page cache and .pyc files
            a = server.create_database(f"bench_alembic_{run}")
            c = server.create_database(f"bench_celora_{run}")
            alembic = [PYTHON, "-m", "alembic", "-c", str(ini200), "upgrade", "head"], {**env, "DATABASE_URL": a}
            celora = ([PYTHON, "-m", "celora_cli", "db", "migrate-deploy"],
                      {**env, "DATABASE_URL": c, "CELORA_MIGRATIONS_DIR": str(history)})
            # alternate which goes first, and compare each pair (see _timing.paired_seconds)
            first, second = (alembic, celora) if run % 2 else (celora, alembic)
            seconds = {id(first): timed(*first), id(second): timed(*second)}
            if run:
                alembic_runs.append(seconds[id(alembic)])
                celora_runs.append(seconds[id(celora)])
                ratios.append(seconds[id(celora)] / seconds[id(alembic)])
        return report([
            ("celora db health  vs alembic current", *health[:2], 0.5, health[2]),
            ("celora db status  vs alembic current", *status[:2], 0.5, status[2]),
            (f"migrate-deploy {GENERATED} vs alembic upgrade head",
             statistics.median(celora_runs), statistics.median(alembic_runs), 1.1, statistics.median(ratios)),
        ])
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
