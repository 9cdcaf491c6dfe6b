"""The history read without executing its files (celora_cli.migrate.script_loader) is the history Alembic imports.

Random histories (branches, merges, depends_on, branch labels) are loaded both ways and compared: the revision map,
heads, bases, each revision's parents, children and labels, the upgrade steps from any reachable state, the walk
order and celora's applied files. Then what laziness must not change: broken files are still named before anything
runs, an edited file is seen on the next run (the cache is keyed by content), a file whose fields are not literals
is imported, and a file a run does not execute is never imported (its top level writes a marker).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from celora_cli.errors import MigrationHistoryError
from celora_cli.migrate import script_loader
from celora_cli.migrate.deploy import deploy
from celora_cli.migrate.history import read_history
from celora_cli.migrate.scripts import (
    applied_files,
    find_migrations_dir,
    load_script_directory,
    revisions_of,
    script_directory,
)
from celora_cli.migrate.status import history_from_script, replaces_of
from tests.migrate.test_history import alembic_script, applied_state, random_history, write_revision
from tests.support import REPO, settings_for


def lazy(versions: Path, cache: Path | None = None):
    """The lazily read ScriptDirectory of `versions`, its revision map built (no head check: random histories
    have several)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    root = versions.parent
    (root / "env.py").write_text("")
    config = Config()
    config.set_main_option("script_location", str(root))
    script = script_loader.make_lazy(ScriptDirectory.from_config(config), script_loader.FileReader(cache))
    script.get_heads()
    return script


def shape(script) -> dict:
    """Everything of a revision map that running and ordering migrations depends on."""
    return {
        s.revision: (s.down_revision, s.dependencies, s._resolved_dependencies, s._normalized_resolved_dependencies,
                     sorted(s.branch_labels), sorted(s.nextrev), sorted(s._all_nextrev), s.is_head, s.is_base,
                     s.doc, Path(s.path).resolve())
        for s in script.walk_revisions()}


def with_labels(rng: random.Random, versions: Path, size: int) -> None:
    """A random history whose branch roots carry branch labels, some depends_on naming a label."""
    revisions = random_history(rng, versions, size)
    history = read_history(versions)
    roots = [r for r in revisions if not history.revisions[r].down_revisions or rng.random() < 0.2]
    labelled = {root: f"label_{i}" for i, root in enumerate(roots)}
    for path in versions.iterdir():
        source = path.read_text()
        revision = re.search(r"^revision(?:: str)? = '(.*)'$", source, re.M).group(1)
        source = source.replace("branch_labels = None", f"branch_labels = {(labelled[revision],)!r}"
                                if revision in labelled else "branch_labels = None")
        parents = history.revisions[revision].parents
        candidates = [labelled[r] for r in labelled if r != revision and r not in parents
                      and revision not in {p for p in history._ancestors([r])}]
        if "depends_on = None" in source and candidates and rng.random() < 0.15:
            source = source.replace("depends_on = None", f"depends_on = {rng.choice(candidates)!r}")
        path.write_text(source)


@pytest.mark.parametrize("seed", range(30))
def test_the_lazy_map_is_alembics_map(tmp_path, seed):
    rng = random.Random(seed)
    versions = tmp_path / "versions"
    versions.mkdir()
    with_labels(rng, versions, size=rng.randint(1, 40))
    plain = alembic_script(versions)
    ours = lazy(versions)
    assert ours.get_heads() == plain.get_heads()
    assert ours.get_bases() == plain.get_bases()
    assert shape(ours) == shape(plain)
    assert [s.revision for s in ours.walk_revisions()] == [s.revision for s in plain.walk_revisions()]
    assert sorted(s.revision for s in revisions_of(ours)) == sorted(shape(plain))
    history = read_history(versions)
    states = [applied_state(history, rng) for _ in range(5)]
    for current in states:
        assert applied_files(ours, current) == alembic_applied_files(plain, current)
    assert not any(s.imported for s in revisions_of(ours)), "reading the history imported a module"
    for current in states:  # building a run's steps imports their modules (Alembic's RevisionStep reads them)
        assert [s.revision.revision for s in ours._upgrade_revs("heads", current)] == \
            [s.revision.revision for s in plain._upgrade_revs("heads", current)]


def alembic_applied_files(script, current):
    """celora's applied_files as it was, on Alembic's iterate_revisions only (the order snapshot keys chain)."""
    from celora_cli.migrate.journal import LocalFile

    seen: dict[str, LocalFile] = {}
    for head in current:
        for revision in script.iterate_revisions(head, "base"):
            seen.setdefault(revision.revision, LocalFile(revision.revision, Path(revision.path).stem,
                                                         Path(revision.path)))
    return list(reversed(seen.values()))


def test_a_linear_history_gives_alembics_applied_files_and_history(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    ids = [f"{i:04d}beef" for i in range(40)]
    for i, revision in enumerate(ids):
        write_revision(versions, i, revision, (ids[i - 1],) if i else ())
    ours, plain = lazy(versions), alembic_script(versions)
    for revision in (ids[0], ids[17], ids[-1]):
        assert applied_files(ours, (revision,)) == alembic_applied_files(plain, (revision,))
    assert history_from_script(ours, tmp_path) == history_from_script(plain, tmp_path)


# -- broken histories: the same errors as an import of every file would give --------------------------------

def broken_history(tmp_path: Path, source: str) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", target, ignore=shutil.ignore_patterns("__pycache__", "snapshots"))
    (target / "versions" / "20200101000000_old_and_broken.py").write_text(source)
    return target


@pytest.mark.parametrize(("source", "words"), [
    # a syntax error in an old file the run would never execute
    ('revision = "20200101000000"\ndown_revision = None\ndef upgrade(:\n    pass\n', "syntax error at line 3"),
    # found by the compiler, not the parser: an import would fail on it too
    ('revision = "20200101000000"\ndown_revision = None\nreturn 1\n', "'return' outside function"),
])
def test_a_file_that_does_not_compile_is_named_though_nothing_runs_it(tmp_path, source, words):
    history = broken_history(tmp_path, source)
    with pytest.raises(MigrationHistoryError) as caught:
        load_script_directory(history)
    assert "20200101000000_old_and_broken.py" in caught.value.message and words in caught.value.message


def test_duplicate_ids_missing_parents_loops_and_two_heads_are_refused(tmp_path):
    head = load_script_directory(REPO / "migrations").get_current_head()
    cases = {
        "duplicate": (f'revision = "{head}"\ndown_revision = None\n', "appears in 2 migration files"),
        "missing": ('revision = "20200101000000"\ndown_revision = "19990101000000"\n', "'19990101000000'"),
        "two heads": ('revision = "20200101000000"\ndown_revision = None\n', "2 heads"),
    }
    for name, (source, words) in cases.items():
        history = broken_history(tmp_path / name.replace(" ", "_"), source)
        with pytest.raises(MigrationHistoryError) as caught:
            load_script_directory(history)
        assert words in caught.value.message, (name, caught.value.message)
    loop = broken_history(tmp_path / "loop", 'revision = "20200101000000"\ndown_revision = "20200101000000"\n')
    with pytest.raises(MigrationHistoryError) as caught:  # Alembic's own LoopDetected, named as before
        load_script_directory(loop)
    assert "20200101000000" in caught.value.message


# -- laziness: what is imported, and when ----------------------------------------------------------------

SIDE_EFFECT = '''"""{name}"""
from pathlib import Path

from alembic import op

Path({marker!r}).joinpath({name!r}).touch()  # the module ran

revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    op.execute("SELECT 1")


def downgrade():
    pass
'''


def marked_history(tmp_path: Path, markers: Path, *, pending: bool) -> tuple[Path, str]:
    """The repo's history plus `old` (after the repo head) and, when `pending`, `new` after it; each file's top
    level touches markers/<name>. Returns (migrations dir, the old revision)."""
    target = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", target, ignore=shutil.ignore_patterns("__pycache__", "snapshots"))
    head = load_script_directory(REPO / "migrations").get_current_head()
    versions = target / "versions"
    (versions / "20300101000000_old.py").write_text(
        SIDE_EFFECT.format(name="old", marker=str(markers), revision="20300101000000", down=head))
    if pending:
        (versions / "20300101000001_new.py").write_text(
            SIDE_EFFECT.format(name="new", marker=str(markers), revision="20300101000001", down="20300101000000"))
    return target, "20300101000000"


def test_deploy_executes_the_pending_files_only(tmp_path, empty_db):
    markers = tmp_path / "markers"
    markers.mkdir()
    history, _old = marked_history(tmp_path, markers, pending=False)
    settings = settings_for(empty_db, CELORA_MIGRATIONS_DIR=history, CELORA_CACHE_DIR=tmp_path / "cache")
    deploy(settings)
    assert (markers / "old").exists()  # pending on the empty database: imported and run
    (markers / "old").unlink()

    history, _old = marked_history(tmp_path / "second", markers, pending=True)
    settings = settings_for(empty_db, CELORA_MIGRATIONS_DIR=history, CELORA_CACHE_DIR=tmp_path / "cache")
    applied = [m.revision for m in deploy(settings).applied]
    assert applied == ["20300101000001"]
    assert (markers / "new").exists()
    assert not (markers / "old").exists(), "an applied migration's module was executed by a deploy that skips it"
    assert not list(markers.iterdir())[1:], list(markers.iterdir())


def test_reading_the_history_for_status_and_squash_imports_nothing(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    history, old = marked_history(tmp_path, markers, pending=True)
    script = load_script_directory(history)
    loaded = history_from_script(script, history)
    assert old in loaded.revisions and loaded.heads == ("20300101000001",)
    assert [replaces_of(s) for s in revisions_of(script)] == [()] * len(loaded.revisions)
    assert applied_files(script, (old,))[-1].revision == old
    assert script.get_revision(old).doc == "old"
    assert not list(markers.iterdir())
    assert script.get_revision(old).module.upgrade  # asked for: imported now
    assert [p.name for p in markers.iterdir()] == ["old"]


def test_a_squash_replaces_is_read_from_the_file(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    write_revision(versions, 0, "a1", ())
    path = next(versions.iterdir())
    before, after = "1" * 64, "2" * 64
    path.write_text(path.read_text() + f'replaces = ("old1", "old2")\nrepointed = (("x", "{before}", "{after}"),)\n')
    script = lazy(versions)
    (only,) = revisions_of(script)
    assert replaces_of(only) == ("old1", "old2")
    history = history_from_script(script, tmp_path)
    assert history.replaced == {"old1": "a1", "old2": "a1"}
    assert history.repointed == {"x": ("1" * 64, "2" * 64)}
    assert not only.imported


def test_fields_that_are_not_literals_are_imported_as_alembic_does(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    write_revision(versions, 0, "a1", ())
    (versions / "2026000000001_computed.py").write_text(
        'PARENT = "a1"\nrevision = "b" + "2"\ndown_revision = PARENT\n'
        "def upgrade():\n    pass\n")
    (versions / "2026000000002_via_globals.py").write_text(
        'revision = "c3"\ndown_revision = "a1"\nglobals()["down_revision"] = "b2"\n')
    script = lazy(versions)
    by_id = {s.revision: s for s in revisions_of(script)}
    assert by_id["b2"].down_revision == "a1" and by_id["c3"].down_revision == "b2"
    assert not isinstance(by_id["b2"], script_loader.LazyScript)
    assert not isinstance(by_id["c3"], script_loader.LazyScript)
    assert isinstance(by_id["a1"], script_loader.LazyScript)
    assert script.get_heads() == ["c3"]


def test_a_module_that_disagrees_with_its_literals_is_refused(tmp_path):
    path = tmp_path / "20260101000000_x.py"
    path.write_text('revision = "a1"\ndown_revision = None\n')
    facts = script_loader.RevisionFacts({"revision": "a1", "down_revision": "zz"}, None)
    with pytest.raises(MigrationHistoryError) as caught:
        script_loader.import_revision(path, facts)
    assert "down_revision" in caught.value.message and str(path) in caught.value.message


def test_an_import_that_fails_is_named_when_the_module_is_needed(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "20260101000000_bad.py").write_text(
        'import no_such_module_celora\nrevision = "a1"\ndown_revision = None\n')
    script = lazy(versions)  # loading reads it: the import has not run
    with pytest.raises(MigrationHistoryError) as caught:
        script.import_modules(["a1"])
    assert "20260101000000_bad.py" in caught.value.message and "no_such_module_celora" in caught.value.message


# -- the cache ---------------------------------------------------------------------------------------------

def test_the_cache_is_keyed_by_content_so_an_edit_is_seen(tmp_path, monkeypatch):
    versions = tmp_path / "versions"
    versions.mkdir()
    for i, revision in enumerate(("a1", "b2", "c3")):
        write_revision(versions, i, revision, ("a1", "b2", "c3")[i - 1:i] if i else ())
    cache = tmp_path / "cache.json"
    assert lazy(versions, cache).get_heads() == ["c3"]
    assert len(json.loads(cache.read_text())["files"]) == 3

    parsed = []
    monkeypatch.setattr(script_loader, "read_literals",
                        lambda source, path: parsed.append(path.name) or read_history_literals(source, path))
    assert lazy(versions, cache).get_heads() == ["c3"]
    assert parsed == []  # a warm run parses nothing

    # the same size and a restored mtime: only the content tells the edit apart
    c3 = next(p for p in versions.iterdir() if "c3" in p.name)
    stat = c3.stat()
    c3.write_text(c3.read_text().replace("down_revision = 'b2'", "down_revision = 'a1'"))
    os.utime(c3, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    script = lazy(versions, cache)
    assert parsed == [c3.name]
    assert sorted(script.get_heads()) == ["b2", "c3"]

    c3.write_text(c3.read_text() + "def broken(:\n")  # and a file that no longer compiles is reported again
    with pytest.raises(SyntaxError):
        lazy(versions, cache)


def read_history_literals(source, path):
    from celora_cli.migrate.history import read_literals

    return read_literals(source, path)


def test_a_damaged_or_foreign_cache_is_ignored(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    write_revision(versions, 0, "a1", ())
    cache = tmp_path / "cache.json"
    for content in ("{not json", json.dumps({"tag": "another celora", "files": {}}), json.dumps([1, 2])):
        cache.write_text(content)
        assert lazy(versions, cache).get_heads() == ["a1"]
        assert json.loads(cache.read_text())["tag"] == script_loader._CACHE_TAG


def test_an_unwritable_cache_only_costs_time(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    write_revision(versions, 0, "a1", ())
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert lazy(versions, blocker / "cache.json").get_heads() == ["a1"]  # its folder is a file


def test_a_full_disk_leaves_no_half_written_cache(tmp_path):
    """A write that fails midway (the file-size limit stands in for a full disk: EFBIG, as ENOSPC would be) keeps
    the history loadable and leaves neither a cache file nor its temporary behind."""
    import resource
    import signal

    versions = tmp_path / "versions"
    versions.mkdir()
    for index in range(30):
        write_revision(versions, index, f"r{index:03d}", (f"r{index - 1:03d}",) if index else ())
    cache = tmp_path / "cache" / "files.json"
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (512, limits[1]))
    try:
        heads = lazy(versions, cache).get_heads()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert heads == ["r029"]
    assert not cache.exists() and list(cache.parent.iterdir()) == []


def test_the_commands_keep_the_cache_in_the_cache_dir(tmp_path):
    settings = settings_for("postgresql://celora@localhost/unused", CELORA_CACHE_DIR=tmp_path / "cache")
    assert script_directory(settings).get_current_head()
    (cache,) = (tmp_path / "cache" / "revision-files").iterdir()
    files = list((find_migrations_dir(settings) / "versions").glob("*.py"))
    assert len(json.loads(cache.read_text())["files"]) == len(files)
