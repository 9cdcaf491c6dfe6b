"""celora_cli.migrate.history must agree with Alembic on heads and pending revisions, for every shape of history.

Random histories (linear runs, branches, merges, depends_on between branches, branch labels) are written as
real revision files; Alembic's ScriptDirectory reads the same files. No database is needed.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from celora_cli.errors import MigrationHistoryError
from celora_cli.migrate.history import NotLiteral, read_history


def write_revision(versions: Path, index: int, revision: str, down: tuple[str, ...], depends: tuple[str, ...] = (),
                   labels: tuple[str, ...] = (), annotated: bool = False) -> None:
    down_value = None if not down else (down[0] if len(down) == 1 else down)
    depends_value = None if not depends else depends
    ann = ": str" if annotated else ""
    versions.joinpath(f"2026{index:010d}_rev_{revision}.py").write_text(
        f'"""revision {revision}"""\n'
        "from alembic import op\n"
        f"revision{ann} = {revision!r}\n"
        f"down_revision = {down_value!r}\n"
        f"branch_labels = {labels or None!r}\n"
        f"depends_on = {depends_value!r}\n"
        "def upgrade():\n    pass\n"
        "def downgrade():\n    pass\n"
    )


def random_history(rng: random.Random, versions: Path, size: int) -> list[str]:
    revisions: list[str] = []
    tips: list[str] = []  # current heads of the history being grown
    for index in range(size):
        revision = f"{rng.getrandbits(48):012x}"
        roll = rng.random()
        if not revisions:
            down: tuple[str, ...] = ()
        elif roll < 0.15 and len(tips) >= 2:  # merge two heads
            down = tuple(rng.sample(tips, 2))
        elif roll < 0.30:  # branch from any earlier revision
            down = (rng.choice(revisions),)
        else:
            down = (rng.choice(tips),)
        depends: tuple[str, ...] = ()
        if revisions and rng.random() < 0.1:
            candidate = rng.choice(revisions)
            if candidate not in down:
                depends = (candidate,)
        write_revision(versions, index, revision, down, depends, annotated=rng.random() < 0.5)
        revisions.append(revision)
        tips = [t for t in tips if t not in down] + [revision]
    return revisions


def alembic_script(versions: Path):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    root = versions.parent
    (root / "env.py").write_text("")
    config = Config()
    config.set_main_option("script_location", str(root))
    return ScriptDirectory.from_config(config)


def applied_state(history, rng: random.Random) -> tuple[str, ...]:
    """A state a real database can be in: an ancestor-closed set of revisions, given by its tips."""
    chosen = rng.sample(sorted(history.revisions), k=rng.randint(0, len(history.revisions)))
    closed = history._ancestors(chosen)
    inner = {p for r in closed for p in history._ancestors(history.revisions[r].parents)}
    return tuple(sorted(closed - inner))


@pytest.mark.parametrize("seed", range(40))
def test_heads_and_pending_agree_with_alembic(tmp_path, seed):
    rng = random.Random(seed)
    versions = tmp_path / "versions"
    versions.mkdir()
    random_history(rng, versions, size=rng.randint(1, 30))
    ours = read_history(versions)
    script = alembic_script(versions)
    assert set(ours.heads) == set(script.get_heads())
    for _ in range(5):
        current = applied_state(ours, rng)
        expected = {step.revision.revision for step in script._upgrade_revs("heads", current)}
        pending = ours.pending(current)
        assert {r.revision for r in pending} == expected
        position = {r.revision: i for i, r in enumerate(pending)}
        for r in pending:  # parents always come first
            assert all(position[p] < position[r.revision] for p in r.parents if p in position)


def test_linear_history_order_matches_alembic(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    ids = [f"{i:04d}aaaa" for i in range(25)]
    for i, revision in enumerate(ids):
        write_revision(versions, i, revision, (ids[i - 1],) if i else ())
    history = read_history(versions)
    script = alembic_script(versions)
    expected = [s.revision for s in reversed(list(script.iterate_revisions("heads", ids[4])))]
    assert [r.revision for r in history.pending((ids[4],))] == expected == ids[5:]
    assert history.heads == (ids[-1],)
    assert history.pending((ids[-1],)) == []
    assert history.unknown(("feedbeef", ids[0])) == ["feedbeef"]


def test_branch_label_in_depends_on_is_resolved(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    write_revision(versions, 0, "a1", (), labels=("accounts",))
    write_revision(versions, 1, "b1", ())
    write_revision(versions, 2, "b2", ("b1",), depends=("accounts",))
    history = read_history(versions)
    assert history.revisions["b2"].parents == ("b1", "a1")
    assert {r.revision for r in history.pending(())} == {"a1", "b1", "b2"}


def test_syntax_error_names_the_file_and_line(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "20260101000000_broken.py").write_text('revision = "x"\ndef upgrade(:\n    pass\n')
    with pytest.raises(MigrationHistoryError) as info:
        read_history(versions)
    assert "20260101000000_broken.py" in info.value.message and "line 2" in info.value.message


def test_missing_down_revision_names_the_file(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    write_revision(versions, 0, "aaa", ())
    write_revision(versions, 1, "bbb", ("doesnotexist",))
    with pytest.raises(MigrationHistoryError) as info:
        read_history(versions)
    assert "doesnotexist" in info.value.message and "_rev_bbb.py" in info.value.message


def test_computed_values_fall_back_to_alembic(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "20260101000000_x.py").write_text('revision = "a" + "b"\ndown_revision = None\n')
    with pytest.raises(NotLiteral):
        read_history(versions)


def test_the_projects_own_history_reads_like_alembic():
    versions = Path(__file__).resolve().parents[2] / "migrations" / "versions"
    history = read_history(versions)
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(versions.parent))
    script = ScriptDirectory.from_config(config)
    assert set(history.heads) == set(script.get_heads())
    assert [r.revision for r in history.pending(())] == [
        s.revision for s in reversed(list(script.walk_revisions()))]


@pytest.mark.parametrize("body", [
    'revision = "a1"\ndown_revision = None\nfor down_revision in ("a0",):\n    pass\n',  # a loop rebinds it
    'revision = "a1"\nfrom elsewhere import down_revision\n',  # imported
    'revision = "a1"\ndown_revision = None\ndef f():\n    global down_revision\n    down_revision = "a0"\nf()\n',
    'revision = "a1"\ndown_revision = None\nglobals()["down_revision"] = "a0"\n',  # set by name
    'revision = "a1"\ndown_revision = None\nimport sys\nsys.modules[__name__].down_revision = "a0"\n',
    'revision = "a1"\nfrom elsewhere import *\n',  # may bind anything
    'revision = "a1"\ndown_revision = None\nif True:\n    down_revision = "a0"\n',  # bound inside a block
    # a default is evaluated in the module's scope, though it sits on a function
    'revision = "a1"\ndown_revision = None\ndef upgrade(x=(down_revision := "a0")):\n    pass\n',
    'revision = "a1"\ndown_revision = None\nclass A:\n    def f(self):\n        global down_revision\n',
    'revision = "a1"\ndown_revision = None\ndef f():\n    import inspect\n    inspect.currentframe().f_back\n',
])
def test_fields_bound_any_other_way_are_not_read_literally(tmp_path, body):
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "20260101000000_x.py").write_text(body)
    with pytest.raises(NotLiteral):
        read_history(versions)


def test_a_local_of_the_same_name_in_a_function_is_no_field(tmp_path):
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "20260101000000_x.py").write_text(
        'revision = "a1"\ndown_revision = None\ndef upgrade():\n    revision = 1\n    return revision\n')
    assert read_history(versions).heads == ("a1",)
