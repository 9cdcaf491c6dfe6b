"""The drift gate and the developer's inner loop against hand-run Alembic, on long histories (issues 20 and 22).

Histories: the project's real migrations (and their committed snapshots) plus N small generated ones, each creating
a table that a generated models module also declares (a project with a long history has models for it).

- (a) `celora db migrate-deploy` (drift gate on) vs `alembic upgrade head`, 200 pending migrations on a database at
  the real head (the gate reads the committed snapshot); and (a2) on a database at generated revision 100 (100
  pending; the bench history's snapshots written once by `celora db snapshots --write`). Target 1.15x.
- (b) `celora db migrate --name x` for one new nullable column vs `alembic revision --autogenerate -m x && alembic
  upgrade head`, database at head of the 200-migration history. Target 1.0x.
- (c) `celora db migrate --name x` at 1,000 generated migrations vs at 50. Target 1.2x for data migrations (only
  the history grows); migrations adding a table each (the schema and the models grow 20x with it) are shown for
  information.

Every run is a fresh process on a fresh database copied from a template (outside the timed part), celora and
Alembic alternating (ABBA) and compared pair by pair (see _timing.paired_seconds); files a run wrote are removed
after it. PAIRS (env BENCH_PAIRS) pairs per row, after one warm-up pair.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _timing import PYTHON, report

REPO = Path(__file__).resolve().parent.parent
PAIRS = int(os.environ.get("BENCH_PAIRS", "5"))

MIGRATION = '''"""generated {index}"""
from alembic import op

revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    {upgrade}


def downgrade() -> None:
    {downgrade}
'''
# A migration that adds a table (the schema grows with the history), or a data migration (it does not).
TABLE = ('op.execute("CREATE TABLE bench_{index} (id bigint PRIMARY KEY, note text)")',
         'op.execute("DROP TABLE bench_{index}")')
DATA = ('op.execute("UPDATE users SET display_name = display_name WHERE id IS NULL")', "pass")

MODELS = '''from sqlalchemy import BigInteger, Column, MetaData, Table, Text

from celora_cli.db.models import Base

metadata = MetaData(naming_convention=Base.metadata.naming_convention)
for table in Base.metadata.sorted_tables:
    table.to_metadata(metadata)
for index in range({count}):
    Table(f"bench_{{index}}", metadata, Column("id", BigInteger, primary_key=True), Column("note", Text))
{extra}
'''
NEW_COLUMN = 'metadata.tables["users"].append_column(Column("nickname", Text))'


def revision_id(index: int) -> str:
    """Timestamped ids after the real head (20261207023000), one second apart."""
    return f"20261208{index // 3600:02d}{index // 60 % 60:02d}{index % 60:02d}"


def project(root: Path, name: str, count: int, kind: tuple[str, str] = TABLE) -> Path:
    """A project folder: migrations/ (real + `count` generated, the real snapshots, an env.py whose
    target_metadata is the models with the new column, for a hand-run autogenerate) and its models modules."""
    target = root / name
    versions = target / "migrations" / "versions"
    versions.mkdir(parents=True)
    shutil.copy(REPO / "migrations" / "script.py.mako", target / "migrations")
    shutil.copytree(REPO / "migrations" / "snapshots", target / "migrations" / "snapshots")
    env = (REPO / "migrations" / "env.py").read_text()
    env = env.replace("from celora_cli.db.models import Base\n", f"from models_{name}_x import metadata\n")
    (target / "migrations" / "env.py").write_text(env.replace("target_metadata = Base.metadata",
                                                              "target_metadata = metadata"))
    for path in (REPO / "migrations" / "versions").glob("*.py"):
        shutil.copy(path, versions)
    down = "20261207023000"
    for index in range(count):
        (versions / f"{revision_id(index)}_gen_{index}.py").write_text(
            MIGRATION.format(index=index, revision=revision_id(index), down=down,
                             upgrade=kind[0].format(index=index), downgrade=kind[1].format(index=index)))
        down = revision_id(index)
    tables = count if kind is TABLE else 0
    (root / f"models_{name}.py").write_text(MODELS.format(count=tables, extra=""))
    (root / f"models_{name}_x.py").write_text(MODELS.format(count=tables, extra=NEW_COLUMN))
    (target / "alembic.ini").write_text(f"[alembic]\nscript_location = {target / 'migrations'}\n")
    return target


def run(argv: list[str], env: dict, cwd: Path) -> None:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def pairs(first: Callable[[int], Callable[[], None]], second: Callable[[int], Callable[[], None]]) \
        -> tuple[float, float, float]:
    """ABBA pairs of (first, second); each factory prepares run i (untimed) and returns the timed call."""
    mine, theirs, ratios = [], [], []
    for index in range(PAIRS + 1):  # the first pair warms caches (and builds what is cached)
        a, b = first(index), second(index)
        seconds = {}
        for label, call in (("a", a), ("b", b)) if index % 2 == 0 else (("b", b), ("a", a)):
            started = time.perf_counter()
            call()
            seconds[label] = time.perf_counter() - started
        if index:
            mine.append(seconds["a"])
            theirs.append(seconds["b"])
            ratios.append(seconds["a"] / seconds["b"])
    return statistics.median(mine), statistics.median(theirs), statistics.median(ratios)


def main() -> int:
    from celora_cli.local.server import LocalServer

    base = Path(tempfile.mkdtemp(prefix="celora-bench-loop-"))
    base.chmod(0o755)
    server = LocalServer(base / ".celora", fast=True, database="postgres")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CELORA_") and k != "DIRECT_DATABASE_URL"}
    counter = iter(range(1_000_000))

    def env_of(target: Path, url: str, models: str | None = None) -> dict:
        env = {**clean, "DATABASE_URL": url, "CELORA_PROJECT_ROOT": str(target), "CELORA_ENV": "development",
               "CELORA_MIGRATIONS_DIR": str(target / "migrations"), "PYTHONPATH": f"{REPO}:{base}"}
        return {**env, "CELORA_MODELS": models} if models else env

    def fresh(template: str) -> str:
        return server.create_database(f"run_{next(counter)}", template=template)

    def template_at(target: Path, name: str, destination: str = "head") -> str:
        url = server.create_database(name)
        run([PYTHON, "-m", "alembic", "-c", str(target / "alembic.ini"), "upgrade", destination],
            env_of(target, url), target)
        return name

    def reset_files(target: Path, before: set[Path]) -> None:
        for path in set((target / "migrations").rglob("*.py")) | set((target / "migrations").rglob("*.json")):
            if path not in before:
                path.unlink()

    try:
        server.ensure_running()
        rows = []

        # (a) deploy with the gate vs alembic upgrade head, 200 pending from the real head
        deploy_celora, deploy_alembic = project(base, "d_celora", 200), project(base, "d_alembic", 200)
        at_real = template_at(deploy_alembic, "tpl_real", "20261207023000")

        def deploy_with_gate(target: Path, template: str):
            def prepare(_index: int):
                env = env_of(target, fresh(template))
                return lambda: run([PYTHON, "-m", "celora_cli", "db", "migrate-deploy"], env, target)
            return prepare

        def alembic_upgrade(target: Path, template: str):
            def prepare(_index: int):
                env = env_of(target, fresh(template))
                return lambda: run([PYTHON, "-m", "alembic", "-c", str(target / "alembic.ini"), "upgrade", "head"],
                                   env, target)
            return prepare

        a = pairs(deploy_with_gate(deploy_celora, at_real), alembic_upgrade(deploy_alembic, at_real))
        rows.append(("(a) migrate-deploy+gate 200 vs alembic", *a[:2], 1.15, a[2]))

        # (a2) from generated revision 100 (100 pending), the bench history's snapshots committed
        snapshot_db = server.create_database("snapshots_shadow_server")
        run([PYTHON, "-m", "celora_cli", "db", "snapshots", "--write"], env_of(deploy_celora, snapshot_db),
            deploy_celora)
        at_100 = template_at(deploy_alembic, "tpl_100", revision_id(99))
        a2 = pairs(deploy_with_gate(deploy_celora, at_100), alembic_upgrade(deploy_alembic, at_100))
        rows.append(("(a2) same, at rev 104 of 204 (100 pending)", *a2[:2], 1.15, a2[2]))

        # (b) db migrate vs alembic revision --autogenerate && upgrade, at head of 204
        loop_celora, loop_alembic = project(base, "l_celora", 200), project(base, "l_alembic", 200)
        at_head = template_at(loop_alembic, "tpl_head200")

        def celora_migrate(target: Path, template: str, name: str):
            before = set((target / "migrations").rglob("*.py")) | set((target / "migrations").rglob("*.json"))

            def prepare(_index: int):
                reset_files(target, before)
                env = env_of(target, fresh(template), f"models_{name}_x:metadata")
                return lambda: run([PYTHON, "-m", "celora_cli", "db", "migrate", "--name", "x"], env, target)
            return prepare

        def alembic_pair(target: Path, template: str):
            before = set((target / "migrations").rglob("*.py"))
            ini = str(target / "alembic.ini")

            def prepare(_index: int):
                reset_files(target, before)
                env = env_of(target, fresh(template))

                def both() -> None:
                    run([PYTHON, "-m", "alembic", "-c", ini, "revision", "--autogenerate", "-m", "x"], env, target)
                    run([PYTHON, "-m", "alembic", "-c", ini, "upgrade", "head"], env, target)
                return both
            return prepare

        b = pairs(celora_migrate(loop_celora, at_head, "l_celora"), alembic_pair(loop_alembic, at_head))
        rows.append(("(b) db migrate 204 vs alembic autogen+upgrade", *b[:2], 1.0, b[2]))

        # (c) db migrate at 1,000 generated migrations vs at 50: data migrations (the schema stays the size it
        # is, so only the history grows), then migrations that each add a table (the schema grows 20x too, and
        # autogenerate reflects every table, as a hand-run Alembic does)
        for kind, label in ((DATA, "data migrations"), (TABLE, "a table each")):
            tag = "d" if kind is DATA else "t"
            big, small = project(base, f"c{tag}_1000", 1000, kind), project(base, f"c{tag}_50", 50, kind)
            at_big, at_small = template_at(big, f"tpl_{tag}1000"), template_at(small, f"tpl_{tag}50")
            c = pairs(celora_migrate(big, at_big, f"c{tag}_1000"), celora_migrate(small, at_small, f"c{tag}_50"))
            # The target is the history's length: the data migrations. With a table each, the models
            # and the schema are 20 times larger as well, and comparing them (Alembic's autogenerate reflects
            # every table, hand-run or not) grows with them: shown for information.
            rows.append((f"(c) db migrate 1,000 vs 50 ({label})", *c[:2], 1.2 if kind is DATA else None, c[2]))
        return report(rows)
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
