"""Read an HTML form the way a browser submits it (inputs, textareas, selected options), for the ASGI tests."""

from __future__ import annotations

from html.parser import HTMLParser


class FormReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attr = dict(attrs)
        name = attr.get("name")
        if tag == "input" and name:
            if attr.get("type") == "checkbox":
                if "checked" in attr:
                    self.values[name] = attr.get("value") or "on"
            elif attr.get("type") not in ("submit", "button", "file"):
                self.values[name] = attr.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = ""
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in attr:
            self.values[self._select] = attr.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.values[self._textarea] += data


def form_values(html: str) -> dict[str, str]:
    reader = FormReader()
    reader.feed(html)
    # A textarea's first newline is not part of its value (HTML parsing rule).
    return {k: v[1:] if v.startswith("\n") else v for k, v in reader.values.items()}
