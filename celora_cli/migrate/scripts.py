"""The migration history as Alembic sees it: where it lives, the Config celora runs it with, its ScriptDirectory
(loaded once per run, a broken file reported by name), and the names a new migration may have.

A leaf of the migration package: the status, the runtime, deploy, rollback, reset, lint and `db migrate` all build
on it, and it imports none of them. Alembic is imported inside the functions that build a Config or a
ScriptDirectory: `celora db status` and `db health` read the history without Alembic (celora_cli.migrate.history)
and still need `find_migrations_dir` from here.
"""

from __future__ import annotations

import re
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

from celora_cli.config.settings import Settings
from celora_cli.errors import ConfigError, MigrationHistoryError
from celora_cli.migrate.history import duplicate_revision_error
from celora_cli.migrate.journal import LocalFile

# The history packaged inside celora (the wheel's copy of migrations/), used when the project has none.
PACKAGED_MIGRATIONS = Path(__file__).parent.parent / "_migrations"
# Alembic's file_template (in Config.set_main_option form, % doubled); [tool.alembic] in pyproject.toml
# holds the same template for a hand-run `alembic revision` (a test checks they agree). The file is named by
# its revision id, which celora makes a timestamp (next_revision_id): 20261126090000_init.py. Naming it by the
# clock instead would part name and id whenever the id has to move past a head stamped in the future.
FILE_TEMPLATE = "%%(rev)s_%%(slug)s"


@dataclass(frozen=True)
class MigrationInfo:
    revision: str
    name: str  # the file name without .py, e.g. 20261126090000_init
    description: str


def find_migrations_dir(settings: Settings) -> Path:
    candidates = [settings.migrations_dir] if settings.migrations_dir else [
        settings.project_root / "migrations", PACKAGED_MIGRATIONS]
    for directory in candidates:
        if directory is not None and (directory / "env.py").is_file():
            return directory
    raise ConfigError(
        f"No Alembic migrations found (looked for env.py in {', '.join(str(c) for c in candidates if c)}).",
        "Run celora from the project root, or set CELORA_MIGRATIONS_DIR to the migrations folder.",
    )


# A migration's name becomes its file name (Alembic's slug of the words) and the first line of its docstring,
# so a quote, a backslash (`C:\Users` is a unicode escape in a docstring) or a line break would write a file
# Python cannot import. Words, spaces, '-' and '.' are enough for a name.
_NAME_PATTERN = re.compile(r"[\w][\w .-]*")
MAX_NAME_LENGTH = 100


def is_packaged(directory: Path) -> bool:
    """Whether `directory` is the history packaged inside celora (site-packages), which no command may write to."""
    return directory.resolve() == PACKAGED_MIGRATIONS.resolve()


def check_migration_name(name: str) -> str:
    """The name, stripped; ConfigError when it could not become a migration file (checked before any work)."""
    stripped = name.strip()
    if not stripped or len(stripped) > MAX_NAME_LENGTH or not _NAME_PATTERN.fullmatch(stripped):
        odd = sorted({c for c in stripped if not (c.isalnum() or c in "_ .-")})
        what = (f"has characters a migration file name and docstring can't hold: {' '.join(map(repr, odd))}"
                if odd else f"must be 1 to {MAX_NAME_LENGTH} characters and start with a letter or digit")
        raise ConfigError(f"The migration name {stripped[:120]!r} {what}.",
                          "Use letters, digits, spaces, '_', '-' or '.', e.g. --name add_wallet_label")
    return stripped


def alembic_config(settings: Settings, connection=None):
    """The Alembic Config celora runs with: the same script location, file names and time zone as
    [tool.alembic] in pyproject.toml gives a hand-run `alembic`."""
    from alembic.config import Config  # on demand: status and health import this module without needing Alembic

    config = Config()
    config.set_main_option("script_location", str(find_migrations_dir(settings)))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("timezone", "UTC")
    config.attributes["celora_settings"] = settings
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_directory(settings: Settings, config=None):
    """The migration history (Alembic's ScriptDirectory, revision map loaded); MigrationHistoryError if broken."""
    return load_script_directory(find_migrations_dir(settings), config or alembic_config(settings))


def load_script_directory(migrations_dir: Path, config=None):
    """Alembic's ScriptDirectory with its revision map loaded, once per run.

    The map is read from the files' literals, each module imported only when a step runs it
    (celora_cli.migrate.script_loader); every file is still compiled. A broken one (syntax error, a down_revision
    that does not exist, two files with one id) becomes MigrationHistoryError naming the file, and so do several
    heads.
    """
    # on demand: status and health import this module without needing Alembic
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from celora_cli.migrate import script_loader

    if config is None:
        config = Config()
        config.set_main_option("script_location", str(migrations_dir))
    script = ScriptDirectory.from_config(config)
    settings = config.attributes.get("celora_settings")
    cache = None
    if isinstance(settings, Settings):
        cache = script_loader.cache_file(settings.cache_root, migrations_dir / "versions")
    script = script_loader.make_lazy(script, script_loader.FileReader(cache))
    heads = read_heads(script, migrations_dir)
    if len(heads) > 1:
        raise MigrationHistoryError(
            f"The migration history in {migrations_dir} has {len(heads)} heads ({', '.join(sorted(heads))}): "
            "two migrations name the same down_revision.",
            "Merge them into one (`alembic merge heads -m merge`) before deploying.",
        )
    return script


def read_heads(script, migrations_dir: Path) -> tuple[str, ...]:
    """script.get_heads(), which builds (and memoizes) the revision map: every file is read here. A broken
    file, or two files with one revision id, becomes MigrationHistoryError naming the files."""
    try:
        with warnings.catch_warnings():
            # Alembic only warns about a duplicate id and keeps whichever file it read last: which migration
            # would run then depends on the order of a directory listing. Stop there instead.
            warnings.filterwarnings("error", message=_DUPLICATE_WARNING.pattern, category=UserWarning)
            return tuple(script.get_heads())
    except MigrationHistoryError:
        raise
    except Exception as exc:  # Alembic lets SyntaxError, KeyError, ImportError... from the files through
        raise _history_error(script, migrations_dir, exc) from exc


_DUPLICATE_WARNING = re.compile(r"Revision (.+) is present more than once")


def _history_error(script, migrations_dir: Path, exc: Exception) -> MigrationHistoryError:
    versions = migrations_dir / "versions"
    duplicate = _DUPLICATE_WARNING.fullmatch(str(exc)) if isinstance(exc, UserWarning) else None
    if duplicate:
        revision = duplicate.group(1)
        return duplicate_revision_error(revision, _files_of(script, revision) or [versions])
    if isinstance(exc, SyntaxError):
        return MigrationHistoryError(
            f"Migration {exc.filename} has a syntax error{f' at line {exc.lineno}' if exc.lineno else ''}: "
            f"{exc.msg}.",
            "Fix the file (`python3 -m py_compile` on it shows the error), then run the command again.")
    if isinstance(exc, KeyError):
        missing = exc.args[0] if exc.args else "?"
        culprit = _file_naming(script, missing)
        where = f"Migration {culprit}" if culprit else f"A migration in {versions}"
        return MigrationHistoryError(
            f"{where} names down_revision {missing!r}, which is not in {versions}.",
            "Fix its down_revision to the revision id of the migration it follows (`alembic history` lists "
            "them), or restore the missing file.")
    frames = [f.filename for f in traceback.extract_tb(exc.__traceback__)
              if Path(f.filename).resolve().parent == versions.resolve()]
    where = f"Migration {frames[-1]}" if frames else f"The migration history in {migrations_dir}"
    return MigrationHistoryError(f"{where} can't be loaded: {type(exc).__name__}: {exc}.",
                                 "Fix that file, then run the command again.")


def _files_of(script, revision: str) -> list[str]:
    """Every file whose `revision` is `revision` (read without building the revision map)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [candidate.path for candidate in script._load_revisions() if candidate.revision == revision]
    except Exception:  # noqa: BLE001 - best effort: the message still names the revision
        return []


def _file_naming(script, revision: str) -> str | None:
    """The file whose down_revision names `revision` (read without building the revision map)."""
    try:
        for candidate in script._load_revisions():  # Alembic's own file loader, as the revision map uses it
            downs = candidate.down_revision
            if downs == revision or (isinstance(downs, (tuple, list)) and revision in downs):
                return candidate.path
    except Exception:  # noqa: BLE001 - best effort: the message still names the missing revision
        return None
    return None


def revisions_of(script) -> list:
    """Every revision (Script) of the loaded history, once each, in the order its files were read. What
    `walk_revisions()` gives when the order does not matter, without its topological sort (tens of milliseconds
    at 1,000 revisions, asked for several times a run)."""
    script.get_heads()  # builds the revision map, when it is not yet
    return [value for key, value in script.revision_map._revision_map.items()
            if value is not None and key == value.revision]  # not the branch-label and None keys


def applied_files(script, current: tuple[str, ...]):
    """The local files of the revisions `current` (alembic_version) says are applied, oldest first. Kept on the
    script per state of its map: deploy's journal check and the schema snapshot keys ask for the same ones."""
    memo = script.__dict__.setdefault("_celora_applied", {})
    key = (tuple(current), len(script.revision_map._revision_map))
    if key not in memo:
        memo[key] = _applied_files(script, current)
    return list(memo[key])


def _applied_files(script, current: tuple[str, ...]) -> list[LocalFile]:
    chain = _linear_ancestry(script, current[0]) if len(current) == 1 else None
    if chain is not None:
        return [_local_file(s) for s in reversed(chain)]
    seen: dict[str, LocalFile] = {}
    for head in current:
        for revision in script.iterate_revisions(head, "base"):
            if revision.revision not in seen:
                seen[revision.revision] = _local_file(revision)
    return list(reversed(seen.values()))


def _local_file(script) -> LocalFile:
    path = path_of(script)
    return LocalFile(script.revision, path.stem, path)


def path_of(script) -> Path:
    """Path(script.path), made once per Script (a thousand revisions asked for their path several times a run
    spent more in pathlib than in anything else celora does with them)."""
    path = script.__dict__.get("_celora_path")
    if path is None:
        path = script.__dict__["_celora_path"] = Path(script.path)
    return path


def _linear_ancestry(script, revision: str) -> list | None:
    """`revision` and its ancestors, newest first, when they form one chain (no merge, no depends_on): then
    there is one order, the one Alembic's iterate_revisions(revision, "base") gives, found in linear time.
    None otherwise (Alembic decides the order) or when `revision` is not a full id of the history."""
    revision_map = script.revision_map._revision_map
    found = revision_map.get(revision)
    if found is None or found.revision != revision:
        return None
    chain = []
    while True:
        chain.append(found)
        parents = found._all_down_revisions
        if not parents:
            return chain
        if len(parents) > 1 or tuple(found._versioned_down_revisions) != tuple(parents):
            return None
        found = revision_map.get(parents[0])
        if found is None:
            return None
