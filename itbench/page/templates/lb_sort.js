/* itbench leaderboard table sorter (inlined; no dependencies).
   Click (or Enter/Space on) a header with data-sort="number|text": ascending first,
   again for descending. Cells carry their exact sort key in data-value; an empty
   data-value (missing, NaN) always sorts last. Ties keep the leaderboard order. */
(function () {
  "use strict";
  function key(cell, numeric) {
    var raw = cell ? cell.getAttribute("data-value") : null;
    if (raw === null || raw === "") { return null; }
    if (!numeric) { return raw.toLowerCase(); }
    var x = parseFloat(raw);
    return isNaN(x) ? null : x;
  }
  function sortTable(table, th) {
    var col = th.cellIndex;
    var numeric = th.getAttribute("data-sort") === "number";
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (tr) {
      return { tr: tr, k: key(tr.cells[col], numeric), o: parseInt(tr.getAttribute("data-order"), 10) };
    });
    rows.sort(function (a, b) {
      if (a.k === null || b.k === null) {
        if (a.k === null && b.k === null) { return a.o - b.o; }
        return a.k === null ? 1 : -1;
      }
      if (a.k < b.k) { return asc ? -1 : 1; }
      if (a.k > b.k) { return asc ? 1 : -1; }
      return a.o - b.o;
    });
    rows.forEach(function (r) { body.appendChild(r.tr); });
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th) {
      if (!th.hasAttribute("data-sort")) { return; }
      th.tabIndex = 0;
      th.title = "Sort by this column (click again to reverse)";
      th.addEventListener("click", function () { sortTable(table, th); });
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortTable(table, th); }
      });
    });
  });
})();
