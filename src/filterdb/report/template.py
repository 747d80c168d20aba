"""The page's inline CSS and JavaScript (no external resources of any kind)."""

CSS = """
:root { --fg: #1d232a; --muted: #5b6570; --line: #d9dee3; --accent: #0b5cab;
        --bad: #fde4e1; --bad-line: #d55e00; --zebra: #f6f8fa; }
* { box-sizing: border-box; }
html { font-size: 16px; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
                    "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 1.5rem 1.5rem 4rem; }
header.page { border-bottom: 1px solid var(--line); margin-bottom: 1.5rem; padding-bottom: .75rem; }
header.page h1 { margin: 0 0 .25rem; font-size: 1.9rem; line-height: 1.2; }
header.page .subtitle { color: var(--muted); margin: 0; }
h2 { font-size: 1.4rem; margin: 2.5rem 0 .5rem; padding-top: .5rem; border-top: 1px solid var(--line); }
h3 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
       font-size: .88em; background: var(--zebra); padding: .05em .3em; border-radius: 3px; }
nav.toc { background: var(--zebra); border: 1px solid var(--line); border-radius: 6px;
          padding: .6rem 1.2rem; margin: 1rem 0 1.5rem; }
nav.toc h2 { border: 0; margin: 0 0 .3rem; padding: 0; font-size: 1rem; }
nav.toc ol { margin: 0; padding-left: 1.4rem; columns: 2; column-gap: 2rem; }
nav.toc li { break-inside: avoid; }
section { scroll-margin-top: 1rem; }
.intro { color: var(--muted); }
figure { margin: 1.25rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .35rem; text-align: center;
             max-width: 80ch; margin-left: auto; margin-right: auto; }
.table-wrap { overflow: auto; max-height: 36rem; margin: 1rem 0; border: 1px solid var(--line);
              border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: .88rem; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid var(--line); text-align: left;
         white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { position: sticky; top: 0; background: #eef1f4; z-index: 1; font-weight: 600; }
tbody tr:nth-child(even) { background: var(--zebra); }
tbody tr.degenerated { background: var(--bad); }
tbody tr.degenerated td:first-child { box-shadow: inset 3px 0 0 var(--bad-line); }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th::after { content: " \\2195"; color: #a0a8b0; font-size: .8em; }
table.sortable thead th[aria-sort="ascending"]::after { content: " \\25B2"; color: var(--fg); }
table.sortable thead th[aria-sort="descending"]::after { content: " \\25BC"; color: var(--fg); }
.table-caption { color: var(--muted); font-size: .9rem; margin: .25rem 0 0; }
table.kv { width: auto; min-width: 24rem; margin: 1rem 0; }
table.kv th { font-weight: 600; color: var(--muted); background: none; position: static; }
footer.page { color: var(--muted); font-size: .85rem; border-top: 1px solid var(--line);
              margin-top: 3rem; padding-top: .75rem; }
.table-tools { display: flex; gap: .75rem; align-items: center; margin: .75rem 0 -.5rem; }
.table-tools input[type=search] { font: inherit; font-size: .88rem; padding: .15rem .45rem;
                                  border: 1px solid var(--line); border-radius: 4px; width: 16rem; }
.table-tools a.csv { font-size: .88rem; }
table.heat { width: auto; font-size: .78rem; }
table.heat td { min-width: 2.6rem; height: 1.7rem; text-align: center; border: 1px solid #fff;
                padding: .1rem .25rem; font-variant-numeric: tabular-nums; }
table.heat.small td { min-width: 1rem; height: 1rem; padding: 0; }
table.heat tbody tr:nth-child(even) { background: none; }
table.heat th { font-weight: 500; white-space: nowrap; }
table.heat thead th { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left;
                      vertical-align: bottom; max-height: 10rem; position: static; }
.note { color: var(--muted); font-weight: normal; font-size: .85em; }
details.detail { border: 1px solid var(--line); border-radius: 6px; margin: .5rem 0;
                 padding: .3rem .8rem; }
details.detail > summary { cursor: pointer; font-weight: 600; }
details.detail[open] > summary { margin-bottom: .5rem; }
section#findings { background: #f3f7fb; border: 1px solid var(--line); border-radius: 6px;
                   padding: 0 1.2rem .6rem; }
section#findings h2 { border: 0; margin-top: .6rem; }
section#findings li { margin: .2rem 0; }
figure.svg svg { max-width: 100%; height: auto; }
figure.svg svg circle:hover { stroke: #000; stroke-width: 1.5; }
@media print { nav.toc { display: none; } .table-wrap { max-height: none; overflow: visible; } }
"""

# Click a header to sort by it (numeric when every non-empty data-value is a number,
# otherwise alphabetical in natural order: "conv3" before "conv10"); click again to reverse.
# Empty values always sort last.
JS = """
(function () {
  "use strict";
  function value(row, col) {
    var cell = row.cells[col];
    if (!cell) return "";
    var v = cell.getAttribute("data-value");
    return v === null ? cell.textContent.trim() : v;
  }
  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    if (!body) return;
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    var sign = dir === "ascending" ? 1 : -1;
    var keyed = rows.map(function (r, i) { return { row: r, v: value(r, col), i: i }; });
    var numeric = keyed.every(function (k) { return k.v === "" || isFinite(Number(k.v)); });
    keyed.sort(function (a, b) {
      if (a.v === "" || b.v === "") {
        if (a.v === b.v) return a.i - b.i;
        return a.v === "" ? 1 : -1;
      }
      var c = numeric ? Number(a.v) - Number(b.v)
                      : a.v.localeCompare(b.v, undefined, { numeric: true, sensitivity: "base" });
      return c !== 0 ? sign * c : a.i - b.i;
    });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    keyed.forEach(function (k) { body.appendChild(k.row); });
  }
  function csvCell(v) {
    return /[",\\n\\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
  }
  // The table's rows as CSV: the header's column names and each cell's raw data-value.
  function tableCSV(id) {
    var table = document.querySelector('table[data-table="' + id + '"]');
    if (!table) return null;
    var lines = [];
    if (table.tHead && table.tHead.rows.length) {
      lines.push(Array.prototype.map.call(table.tHead.rows[0].cells, function (th) {
        return csvCell(th.getAttribute("data-col") || th.textContent.trim());
      }).join(","));
    }
    Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
      lines.push(Array.prototype.map.call(tr.cells, function (td) {
        var v = td.getAttribute("data-value");
        return csvCell(v === null ? td.textContent.trim() : v);
      }).join(","));
    });
    return lines.join("\\r\\n") + "\\r\\n";
  }
  window.filterdbTableCSV = tableCSV;
  function initTools() {
    document.querySelectorAll("input[data-filter]").forEach(function (box) {
      var table = document.querySelector('table[data-table="' + box.getAttribute("data-filter") + '"]');
      if (!table) return;
      box.addEventListener("input", function () {
        var q = box.value.trim().toLowerCase();
        Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
          var text = Array.prototype.map.call(tr.cells, function (td) {
            return (td.getAttribute("data-value") || "") + " " + td.textContent;
          }).join(" ").toLowerCase();
          tr.style.display = !q || text.indexOf(q) >= 0 ? "" : "none";
        });
      });
    });
    document.querySelectorAll("a[data-csv]").forEach(function (a) {
      a.addEventListener("click", function () {
        var text = tableCSV(a.getAttribute("data-csv"));
        if (text === null) return;
        if (a.href && a.href.indexOf("blob:") === 0) URL.revokeObjectURL(a.href);
        a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
      });
    });
  }
  function init() {
    initTools();
    var tables = document.querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      if (!table.tHead || !table.tHead.rows.length) return;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
        th.tabIndex = 0;
        th.title = "sort by this column";
        th.addEventListener("click", function () { sortBy(table, col, th); });
        th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, col, th); }
        });
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
"""
