"""Copy the rows selected in a list as CSV or Markdown.

A small script (served here, no library) adds "Copy CSV" and "Copy Markdown" to each list's toolbar; it asks
/studio/-/copy/<key>?pk=...&format=... for the text (a GET: it only reads, so it also works read-only) and puts it
on the clipboard. The clipboard API exists only in secure contexts (https, or http on localhost / 127.0.0.1): on a
studio served to the network over http it is missing, so the text is always shown in a textarea too, selected,
ready for Ctrl-C. The columns are the export's: sensitive columns are never included.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette_admin.routing import route
from starlette_admin.types import RequestAction
from starlette_admin.views import CustomView

from celora_cli.data.studio.conflicts import canonical

MAX_ROWS = 500
FORMATS = ("csv", "markdown")
SCRIPT_PATH = "-/copy.js"  # relative to /studio/


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    value = canonical(value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def as_csv(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _markdown_cell(text: str) -> str:
    # A pipe ends a cell and a newline ends a row: both escaped so each value stays in its cell.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>")


def as_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_markdown_cell(h) for h in header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_markdown_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class CopyRows:
    """Mixed into StudioView: the list page loads the copy script."""

    def _additional_js_links(self, request: Request) -> list[str]:
        links = list(super()._additional_js_links(request))  # type: ignore[misc]
        if getattr(request.state, "action", None) == RequestAction.LIST:
            links.append(str(request.url_for("admin:copy-script")))
        return links


class CopyView(CustomView):
    """/studio/-/copy.js and /studio/-/copy/<key>?pk=...&format=csv|markdown"""

    def __init__(self) -> None:
        super().__init__(menu_label="Copy", path="/-/copy", route_name="copy", add_to_menu=False)

    @route(".js", methods=["GET"], name="copy-script")
    async def script(self, request: Request) -> Response:
        return Response(COPY_SCRIPT, media_type="text/javascript",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @route("/{key}", methods=["GET"], name="copy-rows")
    async def rows(self, request: Request) -> Response:
        assert self._admin is not None
        view: Any = self._admin._find_view_by_key(request.path_params["key"])
        if not view.is_accessible(request):
            raise HTTPException(403)
        output = request.query_params.get("format", "csv")
        if output not in FORMATS:
            raise HTTPException(400, f"format must be one of {', '.join(FORMATS)}.")
        pks = request.query_params.getlist("pk")
        if not pks:
            raise HTTPException(400, "Select one row or more first.")
        if len(pks) > MAX_ROWS:
            raise HTTPException(400, f"At most {MAX_ROWS} rows are copied at once.")
        request.state.action = RequestAction.EXPORT
        columns = {prop.key for prop in view.mapper.column_attrs}
        fields = [field for field in view.get_fields_list(request, action=RequestAction.EXPORT)
                  if field.name in columns]
        found = await view.find_by_pks(request, pks)
        by_pk = {str(await view.get_pk_value(request, obj)): obj for obj in found}
        ordered = [by_pk[pk] for pk in dict.fromkeys(pks) if pk in by_pk]  # the page's order
        header = [field.name for field in fields]
        rows = [[cell(getattr(obj, field.name, None)) for field in fields] for obj in ordered]
        text = as_csv(header, rows) if output == "csv" else as_markdown(header, rows)
        return PlainTextResponse(text, headers={"Cache-Control": "no-store", "X-Celora-Rows": str(len(rows))})


COPY_SCRIPT = r"""
(function () {
  "use strict";
  function selectedPks() {
    return Array.from(document.querySelectorAll("input.row-checkbox:checked")).map(function (box) {
      return box.value;
    });
  }
  function panel() {
    var box = document.getElementById("celora-copy-panel");
    if (box) return box;
    box = document.createElement("div");
    box.id = "celora-copy-panel";
    box.className = "p-3 border-bottom";
    box.innerHTML = '<div class="d-flex justify-content-between mb-1">' +
      '<span id="celora-copy-status"></span><button type="button" class="btn-close" aria-label="Close"></button>' +
      '</div><textarea id="celora-copy-text" class="form-control font-monospace" rows="8" readonly></textarea>';
    box.querySelector(".btn-close").addEventListener("click", function () { box.remove(); });
    // Inside the list's card, above the grid (the card's parent is a flex row: a sibling would sit beside it).
    var grid = document.querySelector(".table-responsive");
    if (grid) grid.parentNode.insertBefore(box, grid);
    else document.body.insertBefore(box, document.body.firstChild);
    return box;
  }
  function show(text, status) {
    panel();
    var area = document.getElementById("celora-copy-text");
    area.value = text;
    document.getElementById("celora-copy-status").textContent = status;
    area.focus();
    area.select();
  }
  function copy(format) {
    var pks = selectedPks();
    if (!pks.length) { show("", "Select rows first (the check boxes on the left)."); return; }
    var key = window.location.pathname.replace(/\/list\/?$/, "").split("/").pop();
    var query = pks.map(function (pk) { return "pk=" + encodeURIComponent(pk); }).join("&");
    var url = window.location.pathname.replace(/[^\/]+\/list\/?$/, "") + "-/copy/" + encodeURIComponent(key) +
      "?format=" + format + "&" + query;
    fetch(url, {credentials: "same-origin"}).then(function (response) {
      return response.text().then(function (text) {
        if (!response.ok) throw new Error(text || response.statusText);
        return text;
      });
    }).then(function (text) {
      var label = pks.length + " row(s) as " + (format === "csv" ? "CSV" : "Markdown");
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () {
          show(text, "Copied " + label + " to the clipboard.");
        }, function () {
          show(text, "The browser refused the clipboard: " + label + " below, selected (Ctrl-C copies it).");
        });
      } else {
        show(text, "No clipboard on this page (http away from localhost): " + label +
          " below, selected (Ctrl-C copies it).");
      }
    }).catch(function (error) { show("", "Copy failed: " + error.message); });
  }
  function install() {
    var toolbar = document.querySelector(".card-actions .btn-list");
    if (!toolbar || !document.querySelector("input.row-checkbox")) return;
    [["csv", "Copy CSV"], ["markdown", "Copy Markdown"]].forEach(function (item) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-outline-secondary celora-copy";
      button.dataset.format = item[0];
      button.textContent = item[1];
      button.title = "Copy the selected rows (sensitive columns are never included)";
      button.addEventListener("click", function () { copy(item[0]); });
      toolbar.insertBefore(button, toolbar.firstChild);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", install);
  else install();
})();
"""
