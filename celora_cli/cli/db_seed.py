"""`celora db seed`: the Celora fixtures (alice, bob, four chains), idempotent, plus optional generated volume."""

from __future__ import annotations

from pathlib import Path

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("seed")
def seed(
    ctx: typer.Context,
    fixtures: Path | None = typer.Option(
        None, "--fixtures", metavar="DIR", help="Folder of fixture files (default: <project root>/fixtures)."),
    users: int = typer.Option(
        0, "--users", metavar="N", min=0, max=10_000_000,  # ~190M transaction rows already takes hours
        help="Also generate N users (at most 10,000,000) with wallets, transactions and notifications "
        "(Faker, streamed with COPY; about 19 transactions per user)."),
    seed_value: int | None = typer.Option(
        None, "--seed", metavar="S",
        help="Seed of the generated volume (with --users; default 0): the same seed gives the same rows."),
    allow_production: bool = allow_production_option("Seed even a production database"),
    as_json: bool = json_option(),
) -> None:
    """Load the fixtures; a second run changes nothing.

    The fixtures load in one transaction, as upserts on their natural keys. Refused on a production database
    unless --allow-production.
    Example: celora db seed --users 1000 --seed 7
    """
    from celora_cli.data.seed.apply import seed as run_seed
    from celora_cli.errors import UsageError

    if seed_value is not None and users == 0:
        raise UsageError("--seed chooses the generated volume's rows, and no volume was asked for.",
                         "Add --users N (e.g. celora db seed --users 1000 --seed 7), or drop --seed.")
    settings = load_settings_from(ctx)
    directory = fixtures if fixtures is not None else settings.project_root / "fixtures"
    progress = None if as_json or users == 0 else _ProgressBar()
    try:
        result = run_seed(settings, directory, allow_production=allow_production, volume_users=users,
                          volume_seed=seed_value or 0, volume_progress=progress)
    finally:
        if progress is not None:
            progress.close()
    output.emit(result, as_json)


class _ProgressBar:
    """A Rich progress bar on stderr, one task per table, fed by generate_volume's progress(table, done, total)."""

    def __init__(self) -> None:
        from rich.progress import Progress

        self._progress = Progress(console=output.err, transient=False)
        self._tasks: dict[str, object] = {}
        self._progress.start()

    def __call__(self, table: str, done: int, total: int) -> None:
        task = self._tasks.get(table)
        if task is None:
            task = self._tasks[table] = self._progress.add_task(table, total=total)
        self._progress.update(task, completed=done)  # type: ignore[arg-type]

    def close(self) -> None:
        self._progress.stop()


@output.renders("celora_cli.data.seed.apply.SeedResult")
def _render(result) -> None:
    from rich.table import Table

    table = Table(title=f"Seeded {safe(result.database)} from {safe(result.fixtures_dir)}", title_justify="left")
    table.add_column("table")
    for heading in ("created", "updated", "unchanged"):
        table.add_column(heading, justify="right")
    for name, counts in result.tables.items():
        table.add_row(name, str(counts.created), str(counts.updated), str(counts.unchanged))
    output.out.print(table)
    if not result.changed:
        output.out.print("Fixtures: nothing changed (the database already held every one).")
    if result.volume is not None:
        rows = ", ".join(f"{name} {count:,}" for name, count in result.volume.items())
        output.out.print(f"Generated volume: {rows}.")
    output.out.print(f"[dim]{result.duration_ms:.0f} ms; production check: {safe(result.production_check)}[/]")
