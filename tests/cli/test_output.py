"""The one output contract (celora_cli/cli/output.py, celora_cli/results.py): a result's JSON form, emit()'s
envelope, renderer and exit code, and the JSON-lines writer's masking."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import typer

from celora_cli.cli import output
from celora_cli.errors import ExitCode
from celora_cli.results import to_json


@dataclasses.dataclass
class _Child:
    name: str

    def to_json(self) -> dict:
        return {"shown": self.name.upper()}


@dataclasses.dataclass
class _Plain:
    when: tuple[str, ...]
    ratio: float


@dataclasses.dataclass
class _Parent:
    children: list[_Child]
    plain: _Plain
    by_name: dict[str, _Child]


@dataclasses.dataclass
class _Pending:
    url: str
    waiting: int

    @property
    def exit_code(self) -> int:
        return ExitCode.PENDING if self.waiting else ExitCode.OK


@output.renders(f"{__name__}._Pending")
def _render_pending(result: _Pending) -> None:
    output.out.print(f"waiting: {result.waiting} at {output.safe(result.url)}")


def test_to_json_uses_fields_and_each_class_own_form_at_any_depth():
    parent = _Parent([_Child("a")], _Plain(("x", "y"), 0.5), {"k": _Child("b")})
    assert to_json(parent) == {"children": [{"shown": "A"}], "plain": {"when": ["x", "y"], "ratio": 0.5},
                               "by_name": {"k": {"shown": "B"}}}


def test_emit_json_is_the_envelope_masked_then_the_result_exit_code(capsys):
    output.register_secrets(["s3cr3t-pw"])
    with pytest.raises(typer.Exit) as exited:
        output.emit(_Pending("postgresql://app:s3cr3t-pw@db/x", waiting=2), as_json=True)
    assert exited.value.exit_code == ExitCode.PENDING
    data = json.loads(capsys.readouterr().out)
    assert data == {"format_version": output.JSON_FORMAT_VERSION, "ok": True,
                    "url": "postgresql://app:****@db/x", "waiting": 2}


def test_emit_human_uses_the_registered_renderer_and_returns_on_success(capsys):
    output.emit(_Pending("postgresql://app:pw1234@db/x", waiting=0), as_json=False)  # exit code 0: no Exit
    shown = capsys.readouterr().out
    assert "waiting: 0" in shown and "pw1234" not in shown


def test_emit_can_show_a_result_without_its_verdict(capsys):
    output.emit(_Pending("u", waiting=1), as_json=True, exit_code=False)  # e.g. `db roles --dry-run --json`
    assert json.loads(capsys.readouterr().out)["waiting"] == 1


def test_a_result_type_without_a_renderer_is_a_bug_not_silence():
    with pytest.raises(LookupError, match="_Plain"):
        output.emit(_Plain((), 1.0), as_json=False)


def test_a_type_gets_one_renderer_only():
    with pytest.raises(RuntimeError, match="already has a renderer"):
        output.renders(f"{__name__}._Pending")(lambda result: None)


def test_json_lines_are_masked_with_and_without_the_envelope(capsys):
    output.register_secrets(["line-secret-9"])
    output.json_line({"latency_ms": 1.23456, "note": "pw line-secret-9"})
    output.json_line({"new": {"amount": 1.23456, "memo": "line-secret-9"}}, envelope=False)
    first, second = capsys.readouterr().out.splitlines()
    assert json.loads(first) == {"format_version": output.JSON_FORMAT_VERSION, "ok": True, "latency_ms": 1.2,
                                 "note": "pw ****"}
    assert json.loads(second) == {"new": {"amount": 1.23456, "memo": "****"}}  # a row: never rounded


def test_every_registered_renderer_names_a_real_result_class():
    """The renderers are keyed by dotted path (so command modules need not import the core to register): a
    renamed or moved class would leave its renderer unreachable, so each path must still import."""
    from celora_cli.cli.db_group import _DbCommands

    # plan_render: loaded by migrate-deploy only for --plan
    for module in ({m for m in _DbCommands.command_modules.values() if m}
                   | {"celora_cli.cli.local", "celora_cli.cli.plan_render"}):
        importlib.import_module(module)
    paths = [path for path in output.registered_renderers() if not path.startswith(__name__)]
    assert len(paths) >= 20, paths
    for path in paths:
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert dataclasses.is_dataclass(cls), path
        # The class's own path, not a package's re-export: results are looked up by where the class lives.
        assert f"{cls.__module__}.{cls.__qualname__}" == path, f"{path} is {cls.__module__}.{cls.__qualname__}"
