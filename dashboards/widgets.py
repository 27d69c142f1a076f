"""Widgets of our own where Panel's are not accessible enough.

`RangeInput` is the browser's own ``<input type="range">`` with a ``<label>``: arrow keys, Home
and End move it, and a screen reader names it and reads its value. Panel's sliders (noUiSlider)
give their handle no accessible name (axe-core: ``aria-input-field-name``, serious).

`CardGrid` draws the student cards as a list, and changes a card field by field as data arrives.

`LiveTable` is a plain ``<table>`` (a caption, column headers) whose rows are updated cell by cell
as they change, so a keyboard user's focus and a reader's place survive updates. Panel's
Tabulator is a ``role="grid"`` with focusable children a grid may not have (axe-core:
``aria-required-children``, critical).
"""

from __future__ import annotations

import param
from panel.custom import JSComponent

__all__ = ["CardGrid", "LiveTable", "RangeInput"]


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


class CardGrid(JSComponent):
    """A grid of student cards (`lo_stream.dashboards.cards.card_fields`), drawn once and then
    changed field by field: an update touches only the text, bar or bars that changed, so nothing
    flickers, focus and scroll position stay, and 200 cards update many times a second.

    `cards` holds every card's fields by student (setting it redraws every card that differs);
    `order` the students shown, in order (the others are hidden); `update` changes some cards."""

    cards = param.Dict(default={})
    order = param.List(default=[])
    label = param.String(default="Students")
    changes = param.Dict(default={}, doc="The latest update: {'n': a counter, 'cards': {student: fields}}.")

    _esm = """
    const SVG = "http://www.w3.org/2000/svg"
    const STYLE = `
      ul { list-style: none; margin: 0; padding: 0; display: grid; gap: 12px;
           grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); }
      article { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 12px; background: #fff; color: #1f2328;
                font: 14px/1.35 system-ui, "Segoe UI", sans-serif; height: 100%; box-sizing: border-box; }
      h3 { margin: 0 0 4px 0; font-size: 15px; display: flex; align-items: center; gap: 8px; }
      a { color: #0b5cad; text-decoration: none; } a:hover, a:focus { text-decoration: underline; }
      a:focus { outline: 2px solid #0b5cad; outline-offset: 2px; }
      .tag { display: inline-flex; align-items: center; justify-content: center; width: 30px; height: 30px;
             border-radius: 50%; font-size: 12px; font-weight: 600; color: #fff; flex: none; object-fit: cover; }
      .status { display: inline-block; font-size: 12px; font-weight: 600; padding: 1px 8px; border-radius: 10px; }
      .writing { background: #dafbe1; color: #116329; } .idle { background: #fff1c2; color: #7a4d00; }
      .not-started { background: #eaeef2; color: #424a53; }
      .doc { color: #57606a; margin: 4px 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
      .words { display: flex; align-items: center; gap: 6px; }
      .bar { flex: 1; height: 8px; background: #eaeef2; border-radius: 4px; position: relative; overflow: hidden; }
      .fill { position: absolute; left: 0; top: 0; bottom: 0; background: #0b5cad; border-radius: 4px; }
      .median { position: absolute; top: 0; bottom: 0; width: 2px; background: #1f2328; }
      .meta { color: #57606a; font-size: 12px; margin: 4px 0; }`

    function element(tag, className, parent) {
      const made = document.createElement(tag)
      if (className) made.className = className
      if (parent) parent.append(made)
      return made
    }

    function card(id) {
      const item = element("li")
      const article = element("article", "lo-card", item)
      article.dataset.student = id
      const title = element("h3", "", article)
      const tag = element("span", "tag", title)
      tag.setAttribute("aria-hidden", "true")
      const photo = element("img", "tag", null)
      photo.alt = ""
      const link = element("a", "", title)
      const status = element("span", "status", article)
      const doc = element("p", "doc", article)
      const words = element("div", "words", article)
      const count = element("span", "", words)
      const bar = element("span", "bar", words)
      bar.setAttribute("role", "img")
      const fill = element("span", "fill", bar)
      const median = element("span", "median", bar)
      const meta = element("p", "meta", article)
      const spark = document.createElementNS(SVG, "svg")
      spark.setAttribute("role", "img")
      spark.setAttribute("width", "120"); spark.setAttribute("height", "24"); spark.setAttribute("viewBox", "0 0 120 24")
      const base = document.createElementNS(SVG, "line")
      for (const [k, v] of [["x1", 0], ["y1", 23.5], ["x2", 120], ["y2", 23.5], ["stroke", "#d0d7de"]]) base.setAttribute(k, v)
      spark.append(base)
      const bars = []
      for (let i = 0; i < 10; i++) {
        const rect = document.createElementNS(SVG, "rect")
        rect.setAttribute("x", 12 * i + 1); rect.setAttribute("width", 10); rect.setAttribute("fill", "#0b5cad")
        spark.append(rect); bars.push(rect)
      }
      article.append(spark)
      return {item, article, tag, photo, link, status, doc, count, bar, fill, median, meta, spark, bars, shown: {}}
    }

    function set(node, key, value, apply) {
      if (node.shown[key] !== value) { node.shown[key] = value; apply(value) }
    }

    function fill(node, c) {
      set(node, "name", c.name, v => { node.link.textContent = v; node.article.setAttribute("aria-label", v) })
      set(node, "href", c.href, v => node.link.setAttribute("href", v))
      set(node, "photo", c.photo, v => {
        if (v) { node.photo.src = v; node.tag.replaceWith(node.photo) } else if (node.photo.isConnected) node.photo.replaceWith(node.tag)
      })
      set(node, "initials", c.initials, v => { node.tag.textContent = v })
      set(node, "colour", c.colour, v => { node.tag.style.background = v })
      set(node, "status", c.status, v => { node.status.className = "status " + v })
      set(node, "status_text", c.status_text, v => { node.status.textContent = v })
      set(node, "document", c.document, v => { node.doc.textContent = v; node.doc.title = v })
      set(node, "words_text", c.words_text, v => { node.count.textContent = v })
      set(node, "fill", c.fill, v => { node.fill.style.width = v + "%" })
      set(node, "median", c.median, v => { node.median.style.left = v + "%" })
      set(node, "bar_label", c.bar_label, v => node.bar.setAttribute("aria-label", v))
      set(node, "on_task", c.on_task, v => { node.meta.textContent = v })
      set(node, "events", c.events, v => { node.article.dataset.events = v })
      set(node, "spark_label", c.spark_label, v => node.spark.setAttribute("aria-label", v))
      set(node, "spark", c.spark.join(","), () => {
        const peak = Math.max(1, ...c.spark)
        c.spark.forEach((value, i) => {
          const height = value ? Math.max(value / peak * 24, 1) : 0
          node.bars[i].setAttribute("y", 24 - height); node.bars[i].setAttribute("height", height)
        })
      })
    }

    export function render({ model, el }) {
      const style = element("style"); style.textContent = STYLE
      const list = element("ul")
      const nodes = new Map()
      const nodeOf = id => {
        let node = nodes.get(id)
        if (!node) { node = card(id); nodes.set(id, node) }
        return node
      }
      let latest = {}  // fields changed since `cards` was last set
      const fieldsOf = id => latest[id] || model.cards[id]
      const arrange = () => {
        list.setAttribute("aria-label", model.label)
        const wanted = model.order.filter(id => fieldsOf(id)).map(id => nodeOf(id))
        for (const node of wanted) fill(node, fieldsOf(node.article.dataset.student))
        const current = Array.from(list.children)
        if (current.length !== wanted.length || current.some((item, i) => item !== wanted[i].item)) {
          list.replaceChildren(...wanted.map(node => node.item))
        }
      }
      arrange()
      model.on("cards", () => { latest = {}; arrange() })
      model.on("order", arrange)
      model.on("label", arrange)
      model.on("changes", () => {
        for (const [id, fields] of Object.entries(model.changes.cards || {})) {
          latest[id] = fields
          const node = nodes.get(id)
          if (node) fill(node, fields)
        }
      })
      el.append(style, list)
    }
    """

    def update(self, cards: dict[str, dict]) -> None:
        """Change these cards in place (their fields as `card_fields` gives them)."""
        self.changes = {"n": self.changes.get("n", 0) + 1, "cards": cards}
