"""Widgets of our own where Panel's are not accessible enough.

`RangeInput` is the browser's own ``<input type="range">`` with a ``<label>``: arrow keys, Home
and End move it, and a screen reader names it and reads its value. Panel's sliders (noUiSlider)
give their handle no accessible name (axe-core: ``aria-input-field-name``, serious).

`LiveTable` is a plain ``<table>`` (a caption, column headers) whose rows are updated cell by cell
as they change, so a keyboard user's focus and a reader's place survive updates. Panel's
Tabulator is a ``role="grid"`` with focusable children a grid may not have (axe-core:
``aria-required-children``, critical).
"""

from __future__ import annotations

import param
from panel.custom import JSComponent

__all__ = ["LiveTable", "RangeInput"]


class RangeInput(JSComponent):
    """A labelled range of whole numbers, `start` to `end`; `value` follows the user as they move it."""

    value = param.Integer(default=0)
    start = param.Integer(default=0)
    end = param.Integer(default=1)
    label = param.String(default="")
    value_text = param.String(default="", doc="What a screen reader says for the value (aria-valuetext).")

    _esm = """
    export function render({ model, el }) {
      const label = document.createElement("label")
      const input = document.createElement("input")
      input.type = "range"
      input.id = "range"
      label.htmlFor = "range"
      label.style.cssText = "display:block;font:600 14px system-ui,sans-serif;color:#1f2328;margin:6px 0 2px 0"
      input.style.cssText = "width:100%;accent-color:#0b5cad"
      const show = () => {
        label.textContent = model.label
        input.min = model.start
        input.max = model.end
        input.value = model.value
        if (model.value_text) { input.setAttribute("aria-valuetext", model.value_text) }
      }
      show()
      input.addEventListener("input", () => { model.value = parseInt(input.value) })
      for (const name of ["value", "start", "end", "label", "value_text"]) { model.on(name, show) }
      el.append(label, input)
    }
    """


class LiveTable(JSComponent):
    """Rows of text cells under `columns` ([key, title] pairs); a row is a dict with an ``id``, its
    cells by key, and ``href`` for a link on the first column. Setting `rows` redraws the table;
    `update` changes only the rows it names (by ``id``), cell by cell."""

    columns = param.List(default=[])
    rows = param.List(default=[])
    caption = param.String(default="")
    changes = param.Dict(default={}, doc="The latest update: {'n': a counter, 'rows': [changed rows]}.")

    _esm = """
    export function render({ model, el }) {
      const style = document.createElement("style")
      style.textContent = `
        table { border-collapse: collapse; width: 100%; font: 14px system-ui, sans-serif; color: #1f2328; }
        caption { text-align: left; font-weight: 600; padding: 4px 0 8px 0; }
        th { text-align: left; border-bottom: 2px solid #57606a; padding: 6px 8px; background: #f6f8fa; }
        td { border-bottom: 1px solid #d0d7de; padding: 6px 8px; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        a { color: #0b5cad; } a:focus { outline: 2px solid #0b5cad; outline-offset: 2px; }`
      const table = document.createElement("table")
      const caption = document.createElement("caption")
      const head = document.createElement("thead")
      const body = document.createElement("tbody")
      table.append(caption, head, body)
      const byId = new Map()
      const fill = (tr, row) => {
        model.columns.forEach(([key, title, numeric], i) => {
          let td = tr.children[i]
          if (!td) { td = document.createElement("td"); if (numeric) td.className = "num"; tr.append(td) }
          const text = row[key] === null || row[key] === undefined ? "" : String(row[key])
          if (i === 0 && row.href) {
            let a = td.firstElementChild
            if (!a) { a = document.createElement("a"); td.append(a) }
            if (a.textContent !== text) a.textContent = text
            if (a.getAttribute("href") !== row.href) a.setAttribute("href", row.href)
          } else if (td.textContent !== text) {
            td.textContent = text
          }
        })
      }
      const draw = () => {
        caption.textContent = model.caption
        const tr = document.createElement("tr")
        for (const [key, title, numeric] of model.columns) {
          const th = document.createElement("th"); th.scope = "col"; th.textContent = title
          if (numeric) th.className = "num"
          tr.append(th)
        }
        head.replaceChildren(tr)
        const rows = []
        byId.clear()
        for (const row of model.rows) {
          const line = byId.get(row.id) || document.createElement("tr")
          fill(line, row); byId.set(row.id, line); rows.push(line)
        }
        body.replaceChildren(...rows)
      }
      draw()
      model.on("rows", draw)
      model.on("columns", draw)
      model.on("changes", () => {
        for (const row of (model.changes.rows || [])) { const line = byId.get(row.id); if (line) fill(line, row) }
      })
      el.append(style, table)
    }
    """

    def update(self, rows: list[dict]) -> None:
        """Change these rows in place (rows not shown are ignored)."""
        self.changes = {"n": self.changes.get("n", 0) + 1, "rows": rows}
