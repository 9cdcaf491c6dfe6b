"""MkDocs hooks for celora's documentation site (docs/mkdocs.yml): the pages that must not drift are made at
build time instead of being checked in.

- `<!-- command-reference -->` (in reference/commands.md, which says so to a reader of the bare file) becomes
  every command, with its usage, help text, arguments and options (name, default, help), walked from the Typer
  app itself, so a new option or a changed default shows up on the next build.
- `<!-- docs-file: schema.md -->` becomes docs/schema.md, the Mermaid diagram `celora db generate` writes (it
  keeps its path, which `db generate` and its tests know), its headings one level down; `grafana-celora.json`,
  the dashboard, is offered for download.
- `<!-- readme: TITLE -->` in a page becomes the body of the README's `## TITLE` section: the settings and
  exit-code tables live once, in the README (the front door, where tests keep them true), and the site shows
  that very text.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
# This checkout's celora, not whichever one the virtualenv happens to hold.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_README_SECTION = re.compile(r"^<!-- readme: (?P<title>[^>]+?) -->$", re.MULTILINE)
_COMMAND_REFERENCE = "<!-- command-reference -->"
_DOCS_FILE = re.compile(r"^<!-- docs-file: (?P<name>[^>]+?) -->$", re.MULTILINE)


# ------------------------------------------------------------------------------------------ the command reference


def root_command():
    """`celora` itself as Click sees it, and its context."""
    import typer

    from celora_cli.cli.app import app

    root = typer.main.get_command(app)
    # with the app's context settings, as a real run has them (`-h` as well as `--help`)
    return root, root.context_class(root, info_name="celora", **root.context_settings)


def leaf_commands() -> list[tuple[list[str], object, object]]:
    """(path, command, context) for every runnable command, in listing order. The groups load their command
    modules lazily: list_commands/get_command are what load them. (Typer vendors its own Click, so the types
    are asked by what they do, not by class.)"""
    root, root_ctx = root_command()
    found: list[tuple[list[str], object, object]] = []

    def walk(command, ctx, path: list[str]) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is None or sub.hidden:
                    continue
                walk(sub, sub.context_class(sub, info_name=name, parent=ctx, **sub.context_settings), [*path, name])
        else:
            found.append((path, command, ctx))

    walk(root, root_ctx, [])
    return found


def _escape_prose(text: str) -> str:
    """Help text as Markdown: backtick spans stay code, `<`, `>` and `&` elsewhere are shown, not parsed as HTML."""
    parts = re.split(r"(`[^`\n]*`)", text)
    return "".join(part if len(part) > 1 and part[0] == part[-1] == "`" else html.escape(part, quote=False)
                   for part in parts)


def _cell(text: str) -> str:
    return _escape_prose(" ".join(text.split())).replace("|", "\\|")


def _help_markdown(help_text: str) -> str:
    from celora_cli.cli.lazy import reflow

    blocks = []
    for paragraph in reflow(help_text).split("\n\n"):
        lines = paragraph.splitlines()
        if lines and lines[0].startswith("- "):  # a list in the docstring stays a list
            blocks.append("\n".join(_escape_prose(line) for line in lines))
        else:  # `Example:` and `Exit N` lines keep their own line
            blocks.append("  \n".join(_escape_prose(line) for line in lines))
    return "\n\n".join(blocks)


def _is_option(param) -> bool:
    return param.param_type_name == "option"


def _default(param) -> str:
    if param.required:
        return "required"
    default = param.default
    if callable(default) or default is None or default == () or repr(default) == "Sentinel.UNSET":
        return ""
    if _is_option(param) and param.is_flag and not param.count:
        if param.secondary_opts:
            return f"`{param.opts[-1] if default else param.secondary_opts[0]}`"
        return "on" if default else "off"
    if isinstance(default, (list, tuple)):
        default = " ".join(str(item) for item in default)
    if hasattr(default, "value"):  # an Enum choice
        default = default.value
    return f"`{default}`"


def _option_row(param, ctx) -> str:
    if _is_option(param):
        name = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        value = "" if param.is_flag or param.count else f" `{_metavar(param, ctx)}`"
    else:
        name, value = f"`{param.human_readable_name}`", ""
    return f"| {name}{value} | {_default(param)} | {_cell(getattr(param, 'help', None) or '')} |"


def _metavar(param, ctx) -> str:
    import inspect

    # Click 8.2 made make_metavar take the context; older ones take nothing.
    takes_ctx = "ctx" in inspect.signature(param.make_metavar).parameters
    return param.make_metavar(ctx) if takes_ctx else param.make_metavar()


def command_reference() -> str:
    """The Markdown that replaces `<!-- command-reference -->` (the page's title stays the page's)."""
    commands = leaf_commands()
    root, root_ctx = root_command()
    out = ["Generated from the `celora` command itself when the site is built (docs/hooks.py), so it lists every "
           "command, argument and option with its default and help text as this version has them. "
           "`celora COMMAND --help` prints the same in a terminal.", ""]
    out += [f"- [`celora {' '.join(path)}`](#{_anchor(path)})" for path, _, _ in commands]
    out += ["", "## Global options {#global-options}", "", "They go before the command: "
            "`celora [--env-file FILE] [--debug] COMMAND ...`.", "",
            "| option | default | meaning |", "| --- | --- | --- |"]
    out += [_option_row(param, root_ctx) for param in root.get_params(root_ctx) if not getattr(param, "hidden", False)]
    for path, command, ctx in commands:
        out += ["", f"## `celora {' '.join(path)}` {{#{_anchor(path)}}}", ""]
        out += ["```text", command.get_usage(ctx), "```", ""]
        if command.help:
            out += [_help_markdown(command.help), ""]
        params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
        if params:
            out += ["| argument or option | default | meaning |", "| --- | --- | --- |"]
            out += [_option_row(param, ctx) for param in params]
    return "\n".join(out) + "\n"


def _anchor(path: list[str]) -> str:
    return "celora-" + "-".join(path)


# ------------------------------------------------------------------------------------------ README sections


def readme_section(title: str) -> str:
    """The body of the README's `## TITLE` section (without its heading), up to the next `## `."""
    readme = (REPO / "README.md").read_text()
    start = readme.index(f"\n## {title}\n")
    body_start = readme.index("\n", start + 1) + 1
    end = readme.find("\n## ", body_start)
    return readme[body_start:end if end != -1 else None].strip() + "\n"


# ------------------------------------------------------------------------------------------ MkDocs events


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, "grafana-celora.json", abs_src_path=str(DOCS / "grafana-celora.json")))
    return files


def docs_file(name: str) -> str:
    """A Markdown file kept in docs/ (outside the pages), its headings one level down to sit inside a page."""
    return re.sub(r"^#", "##", (DOCS / name).read_text(), flags=re.MULTILINE)


def on_page_markdown(markdown, page, config, files):
    if _COMMAND_REFERENCE in markdown:
        # the marker and the note for readers of the bare file give way to the reference
        markdown = markdown.split(_COMMAND_REFERENCE)[0] + command_reference()
    markdown = _README_SECTION.sub(lambda match: readme_section(match["title"]), markdown)
    return _DOCS_FILE.sub(lambda match: docs_file(match["name"]), markdown)
