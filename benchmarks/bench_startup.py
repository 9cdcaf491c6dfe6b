"""Start-up cost of the CLI, as ratios against baselines measured in the same run.

The floor for any Typer CLI is Typer itself (it imports Rich and renders help with it), so the baseline is a
two-command Typer app with a root callback and a typed option. Target (issue: fast paths): `celora --help` within
1.1x of that floor (it imports no SQLAlchemy/Alembic/psycopg/Faker, nor celora's settings, and of the command
modules only those of the groups it lists). `celora db health --help` is printed for context: its help renders nine
options and a long description against the minimal app's two options, so its ratio includes content, not only
overhead. The cost of those libraries and of a bare interpreter are printed for context too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import PYTHON, command, median_seconds, paired_cpu_seconds, paired_seconds, report

RUNS = 25
MINIMAL_TYPER_APP = """
import typer
app = typer.Typer()
@app.callback()
def root(debug: bool = False) -> None:
    pass
@app.command()
def health(timeout: float = typer.Option(5.0, min=0.5), as_json: bool = False) -> None:
    pass
@app.command()
def status() -> None:
    pass
app()
"""


def main() -> int:
    python = median_seconds(command(PYTHON, "-c", "pass"), RUNS)
    root = paired_seconds(command(PYTHON, "-m", "celora_cli", "--help"),
                          command(PYTHON, "-c", MINIMAL_TYPER_APP, "--help"), RUNS)
    sub = paired_seconds(command(PYTHON, "-m", "celora_cli", "db", "health", "--help"),
                         command(PYTHON, "-c", MINIMAL_TYPER_APP, "health", "--help"), RUNS)
    root_cpu = paired_cpu_seconds(command(PYTHON, "-m", "celora_cli", "--help"),
                                  command(PYTHON, "-c", MINIMAL_TYPER_APP, "--help"), RUNS)
    heavy = median_seconds(command(PYTHON, "-c", "import sqlalchemy, alembic.command, psycopg"), RUNS)
    return report([
        ("celora --help vs minimal Typer app", *root[:2], 1.1, root[2]),
        ("celora db health --help vs minimal Typer app", *sub[:2], float("inf"), sub[2]),
        ("celora --help CPU time vs minimal (context)", *root_cpu[:2], float("inf"), root_cpu[2]),
        ("minimal Typer app vs bare python (context)", sub[1], python, float("inf")),
        ("sqlalchemy+alembic+psycopg vs python (context)", heavy, python, float("inf")),
    ])

if __name__ == "__main__":
    sys.exit(main())
