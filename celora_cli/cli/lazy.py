"""A command group that imports a command's module only when that command is run or listed.

Typer turns every registered command into a Click command before it parses anything, so a group whose
command modules are all imported up front makes `celora --help` and `celora db health` pay for the import
and the Click conversion of some twenty commands they never run. This group starts with only the commands
its home module defines and knows, for each other command, the module that registers it (on the same Typer
app): running `celora db health` imports that module alone; `celora db --help` (which lists them all) and
shell completion import them all. `tests/cli/test_app.py` checks the name -> module table against what
the modules really register, so the table cannot go stale silently.
"""

from __future__ import annotations

import importlib
import inspect
import re

import typer
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_command_name, get_group_from_info

# A line that starts a new line in a help paragraph instead of continuing the sentence above it.
_OWN_LINE = re.compile(r"(Example|Examples|Exit \d|- )")


def reflow(help_text: str) -> str:
    """A docstring as Typer should render it: paragraphs (blank-line separated) joined into one line each, so
    the terminal wraps them at its own width instead of where the source lines happened to break; an
    `Example:` line, an `Exit N ...` line or a `- ` item keeps its own line."""
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    reflowed = []
    for paragraph in paragraphs:
        lines: list[str] = []
        for line in paragraph.splitlines():
            line = line.strip()
            if lines and not _OWN_LINE.match(line):
                lines[-1] = f"{lines[-1]} {line}"
            else:
                lines.append(line)
        reflowed.append("\n".join(lines))
    return "\n\n".join(reflowed)


class PanelledGroup(TyperGroup):
    """A group whose listing shows one line per command (the first paragraph of its help: a short summary)
    in named panels, and whose commands' help is reflowed (see `reflow`). Set by a subclass: `panels`, panel
    title -> the command names in it."""

    panels: dict[str, tuple[str, ...]] = {}

    def get_command(self, ctx, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is not None and not getattr(command, "_celora_polished", False):
            if command.help:
                command.help = reflow(command.help)
                command.short_help = command.short_help or command.help.split("\n\n")[0]
            for title, names in self.panels.items():
                if cmd_name in names:
                    command.rich_help_panel = title  # type: ignore[attr-defined]
            command._celora_polished = True  # type: ignore[attr-defined]
        return command


class LazyCommandGroup(PanelledGroup):
    """Set by a subclass: `typer_app` (the Typer app the modules register on) and `command_modules`
    (command name -> module, in the order `--help` lists them; a name whose module is None is defined in the
    group's home module and so is always loaded)."""

    typer_app: typer.Typer
    command_modules: dict[str, str | None] = {}
    # Optional one-line help per lazily loaded command: `--help` of this group then lists such a command without
    # importing its module (the root lists `db` and `local` this way). The command's own help should be this text.
    summaries: dict[str, str] = {}
    _listing = False

    def format_help(self, ctx, formatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def _from_summary(self, name: str) -> bool:
        """While this group's help is rendered, a command not loaded yet is listed from its summary."""
        return self._listing and name in self.summaries and name not in self.commands

    def get_command(self, ctx, cmd_name: str):
        if self._from_summary(cmd_name):
            from typer.core import TyperCommand

            return TyperCommand(name=cmd_name, help=self.summaries[cmd_name])  # a name and a line, for listing only
        if cmd_name not in self.commands:
            module = self.command_modules.get(cmd_name)
            if module:
                self._load(module)
            else:  # a typo: load them all, so "Did you mean ...?" can suggest any command
                self.list_commands(ctx)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx) -> list[str]:
        for name, module in self.command_modules.items():
            if module and not self._from_summary(name):
                self._load(module)
        listed = [name for name in self.command_modules if name in self.commands or self._from_summary(name)]
        return listed + [name for name in self.commands if name not in self.command_modules]

    def _load(self, module: str) -> None:
        importlib.import_module(module)  # registers its commands on typer_app (a no-op when already imported)
        app = self.typer_app
        for info in app.registered_commands:
            name = info.name or get_command_name(info.callback.__name__)  # type: ignore[union-attr]
            if name not in self.commands:
                self.commands[name] = get_command_from_info(
                    info, pretty_exceptions_short=app.pretty_exceptions_short,
                    rich_markup_mode=app.rich_markup_mode)
        for group_info in app.registered_groups:
            if group_info.name and group_info.name not in self.commands:
                self.commands[group_info.name] = get_group_from_info(
                    group_info, pretty_exceptions_short=app.pretty_exceptions_short,
                    suggest_commands=app.suggest_commands, rich_markup_mode=app.rich_markup_mode)
