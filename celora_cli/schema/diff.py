"""`celora db diff --from SOURCE --to SOURCE [--sql | --summary] [--exit-code]` (Prisma's `migrate diff`): what
differs between two schema sources (celora_cli.schema.sources), and the SQL that turns the first into the second.

- The summary compares the two from the catalogs (celora_cli.schema.drift): tables, columns, constraints,
  indexes, enum types and labels, triggers, functions, sequences, extensions; each difference in drift's words
  ("column users.nickname exists in FROM but not in TO").
- `--sql`: the FROM database compared with TO's metadata (the models as declared, or TO's database reflected)
  by the comparison `db migrate` writes revisions from (celora_cli.schema.model_changes), rendered by Alembic's
  offline SQL rendering. Triggers, functions, extensions and sequences are beyond what Alembic renders: each such
  difference is listed as a `-- celora: not rendered:` comment, never left out silently.

The sources are opened one at a time (TO, then FROM), so one shadow database at a time is enough, and
SHADOW_DATABASE_URL serves both. Live databases are read in READ ONLY transactions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from sqlalchemy import MetaData

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import connect
from celora_cli.db.errors import translating
from celora_cli.db.factory import build_engine
from celora_cli.errors import ExitCode
from celora_cli.migrate.scripts import alembic_config, script_directory
from celora_cli.results import to_json
from celora_cli.schema.drift import IGNORED_TABLES, Difference, Snapshot, compare, snapshot
from celora_cli.schema.model_changes import compare_models, render_sql
from celora_cli.schema.sources import MODELS, Source, opened, parse_source

# What Alembic's operations cannot express: listed as comments in --sql.
_NOT_RENDERED = ("trigger", "function", "extension", "sequence")


@dataclass
class DiffResult:
    source: str  # --from, as shown (a URL masked)
    target: str  # --to
    differences: list[Difference] = field(default_factory=list)
    statements: list[str] | None = None  # --sql: the statements turning FROM into TO
    exit_on_difference: bool = False  # --exit-code

    @property
    def differ(self) -> bool:
        return bool(self.differences) or any(not s.startswith("--") for s in self.statements or [])

    @property
    def exit_code(self) -> int:
        return ExitCode.CHANGES if self.exit_on_difference and self.differ else ExitCode.OK

    def describe(self, difference: Difference) -> str:
        return difference.describe(self.source, self.target)

    def to_json(self) -> dict:
        return {"from": self.source, "to": self.target, "differ": self.differ,
                "differences": [{**to_json(d), "description": self.describe(d)} for d in self.differences],
                "statements": self.statements}


def diff(settings: Settings, source: str, target: str, *, sql: bool = False, exit_on_difference: bool = False,
         shadow_url: DatabaseURL | None = None) -> DiffResult:
    """Compare two schema sources; changes nothing but the shadow databases it makes (and drops)."""
    config = functools.cache(lambda: alembic_config(settings))
    script = functools.cache(lambda: script_directory(settings, config()))
    # Everything cheap first: both sources parsed, files read, revisions resolved, models imported.
    origin = parse_source(source, "--from", settings, script)
    goal = parse_source(target, "--to", settings, script)
    for live in (origin, goal):
        if live.live:
            _reachable(live, settings)
    configured = shadow_url if shadow_url is not None else settings.shadow_database_url
    result = DiffResult(origin.label, goal.label, exit_on_difference=exit_on_difference)
    target_metadata = goal.metadata if goal.kind == MODELS else None
    with opened(goal, settings, config(), script, configured) as url:
        goal_schema = _snapshot(url, settings, goal)
        if sql and target_metadata is None:
            target_metadata = _reflect(url, settings, goal)
    with opened(origin, settings, config(), script, configured) as url:
        origin_schema = _snapshot(url, settings, origin)
        result.differences = compare(origin_schema, goal_schema)
        if sql:
            result.statements = _statements(url, settings, origin, target_metadata, result)
    return result


def _read_only(url: DatabaseURL, source: Source):
    # The label is printed beside the (masked) URL, so it names the option, never the URL again.
    return translating(url, source.option if source.live else "the shadow database")


def _reachable(source: Source, settings: Settings) -> None:
    """A live source answers before any shadow is made for the other one (cheap checks first)."""
    assert source.url is not None
    with _read_only(source.url, source), connect(source.url, settings, application_name="celora db diff") as conn:
        conn.execute("SELECT 1")


def _snapshot(url: DatabaseURL, settings: Settings, source: Source) -> Snapshot:
    with _read_only(url, source), connect(url, settings, application_name="celora db diff",
                                          autocommit=False) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        try:
            return snapshot(conn)
        finally:
            conn.rollback()


def _reflect(url: DatabaseURL, settings: Settings, source: Source) -> MetaData:
    """The source's tables as SQLAlchemy metadata (types, defaults, constraints, indexes, comments)."""
    metadata = MetaData()
    engine = build_engine(url, settings, pooled=False, application_name="celora db diff")
    try:
        with _read_only(url, source), engine.connect() as conn:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            metadata.reflect(conn, only=lambda name, _metadata: name not in IGNORED_TABLES)
            conn.rollback()
    finally:
        engine.dispose()
    return metadata


def _statements(url: DatabaseURL, settings: Settings, origin: Source, target_metadata, result: DiffResult) \
        -> list[str]:
    engine = build_engine(url, settings, pooled=False, application_name="celora db diff")
    try:
        with _read_only(url, origin), engine.connect() as conn:
            if origin.live:  # only read: enum defaults are compared as text instead of on the server
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            changes = compare_models(conn, target_metadata, prepare=not origin.live)
            conn.rollback()
    finally:
        engine.dispose()
    statements = render_sql(changes)
    statements += [f"-- celora: not rendered: {result.describe(d)}" for d in result.differences
                   if d.kind in _NOT_RENDERED]
    return statements
