/* clinfuse view: tables with paging, search and sort; metric curves; the MEETI record filters.
   Plain JS, no library, no network. Data come from <script type="application/json"> blocks and
   are inserted with textContent only, so text from data files is never parsed as HTML. */
"use strict";

function readJson(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return String(v);
    return String(Number.parseFloat(v.toPrecision(6)));
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function cell(col, v, href) {
  const td = el("td");
  if (v !== null && v !== undefined) td.dataset.value = typeof v === "object" ? JSON.stringify(v) : String(v);
  if (col === "explanation" && typeof v === "string" && v.includes(" | ")) {
    const ol = el("ol", { class: "rules" });
    for (const part of v.split(" | ")) ol.appendChild(el("li", {}, part));
    td.appendChild(ol);
  } else if (href) {
    td.appendChild(el("a", { href: href }, fmt(v)));
  } else {
    td.textContent = fmt(v);
  }
  return td;
}

/* A paged table: data = {columns, rows, links?: {column: [href per row]}}. */
function DataTable(host, data, opts) {
  this.host = host;
  this.data = data;
  this.pageSize = opts.pageSize || 25;
  this.page = 0;
  this.order = data.rows.map((_, i) => i);
  this.view = this.order.slice();
  this.sortCol = -1;
  this.sortDir = 1;
  const bar = el("div", { class: "tablebar" });
  if (opts.search) {
    this.search = el("input", { type: "search", placeholder: "filter rows", class: "table-search" });
    this.search.addEventListener("input", () => this.filter(this.search.value));
    bar.appendChild(this.search);
  }
  this.prev = el("button", { type: "button", class: "prev" }, "previous");
  this.next = el("button", { type: "button", class: "next" }, "next");
  this.info = el("span", { class: "pageinfo" });
  this.prev.addEventListener("click", () => this.go(this.page - 1));
  this.next.addEventListener("click", () => this.go(this.page + 1));
  bar.append(this.prev, this.info, this.next);
  this.table = el("table", { class: "grid" });
  const thead = el("thead");
  const tr = el("tr");
  data.columns.forEach((c, j) => {
    const th = el("th", { "data-col": c }, c);
    th.addEventListener("click", () => this.sort(j));
    tr.appendChild(th);
  });
  thead.appendChild(tr);
  this.tbody = el("tbody");
  this.table.append(thead, this.tbody);
  const wrap = el("div", { class: "tablewrap" });
  wrap.appendChild(this.table);
  host.append(bar, wrap);
  this.render();
}
DataTable.prototype.setRows = function (indices) {
  this.view = indices;
  this.page = 0;
  this.render();
};
DataTable.prototype.filter = function (q) {
  q = q.toLowerCase();
  const rows = this.data.rows;
  this.setRows(this.order.filter((i) => !q || rows[i].some((v) => fmt(v).toLowerCase().includes(q))));
};
DataTable.prototype.sort = function (j) {
  this.sortDir = this.sortCol === j ? -this.sortDir : 1;
  this.sortCol = j;
  const rows = this.data.rows, d = this.sortDir;
  const key = (v) => (v === null || v === undefined ? "" : v);
  this.view.sort((a, b) => {
    const x = key(rows[a][j]), y = key(rows[b][j]);
    if (typeof x === "number" && typeof y === "number") return d * (x - y);
    return d * String(x).localeCompare(String(y));
  });
  this.render();
};
DataTable.prototype.go = function (p) {
  const pages = Math.max(1, Math.ceil(this.view.length / this.pageSize));
  this.page = Math.min(Math.max(p, 0), pages - 1);
  this.render();
};
DataTable.prototype.render = function () {
  const { columns, rows, links } = this.data;
  const start = this.page * this.pageSize;
  const pages = Math.max(1, Math.ceil(this.view.length / this.pageSize));
  this.tbody.replaceChildren();
  for (const i of this.view.slice(start, start + this.pageSize)) {
    const tr = el("tr");
    columns.forEach((c, j) => {
      const href = links && links[c] ? links[c][i] : null;
      tr.appendChild(cell(c, rows[i][j], href));
    });
    this.tbody.appendChild(tr);
  }
  this.info.textContent = `page ${this.page + 1} of ${pages} (${this.view.length} rows)`;
  this.prev.disabled = this.page === 0;
  this.next.disabled = this.page >= pages - 1;
};

/* Metric curves: one SVG line chart, a checkbox per numeric column of metrics.csv. */
function Chart(host, data) {
  const cols = data.columns;
  const ei = cols.indexOf("epoch");
  const x = data.rows.map((r, i) => (ei >= 0 ? Number(r[ei]) : i + 1));
  const series = {};
  cols.forEach((c, j) => {
    if (j === ei || c === "train_seconds") return;
    const ys = data.rows.map((r) => (r[j] === null || r[j] === "" ? NaN : Number(r[j])));
    if (ys.some((v) => Number.isFinite(v))) series[c] = ys;
  });
  const names = Object.keys(series);
  const defaults = names.filter((n) => n === "train_loss" || n === "valid_loss" || n.startsWith("valid_acc") || n === "valid_f1");
  const picked = new Set(defaults.length ? defaults.slice(0, 4) : names.slice(0, 2));
  const ns = "http://www.w3.org/2000/svg";
  const W = 720, H = 320, L = 60, R = 16, T = 16, B = 36;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "curves");
  const boxes = el("div", { class: "series" });
  const colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const color = (n) => colors[names.indexOf(n) % colors.length];
  const draw = () => {
    svg.replaceChildren();
    const shown = names.filter((n) => picked.has(n));
    const all = shown.flatMap((n) => series[n].filter((v) => Number.isFinite(v)));
    if (!all.length) return;
    let lo = Math.min(...all), hi = Math.max(...all);
    if (hi === lo) { hi += 1; lo -= 1; }
    const x0 = Math.min(...x), x1 = Math.max(...x) === x0 ? x0 + 1 : Math.max(...x);
    const px = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
    const py = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    const line = (x1_, y1_, x2_, y2_, cls) => {
      const l = document.createElementNS(ns, "line");
      l.setAttribute("x1", x1_); l.setAttribute("y1", y1_); l.setAttribute("x2", x2_); l.setAttribute("y2", y2_);
      l.setAttribute("class", cls);
      svg.appendChild(l);
    };
    const text = (tx, ty, s, anchor) => {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", tx); t.setAttribute("y", ty); t.setAttribute("text-anchor", anchor || "middle");
      t.textContent = s;
      svg.appendChild(t);
    };
    line(L, H - B, W - R, H - B, "axis");
    line(L, T, L, H - B, "axis");
    for (let k = 0; k <= 4; k++) {
      const v = lo + ((hi - lo) * k) / 4;
      line(L, py(v), W - R, py(v), "gridline");
      text(L - 6, py(v) + 4, fmt(Number(v.toPrecision(3))), "end");
    }
    text((L + W - R) / 2, H - 6, "epoch");
    text(L, H - B + 16, fmt(x0)); text(W - R, H - B + 16, fmt(x1));
    for (const n of shown) {
      const pts = x.map((xv, i) => [xv, series[n][i]]).filter((p) => Number.isFinite(p[1]));
      const pl = document.createElementNS(ns, "polyline");
      pl.setAttribute("points", pts.map((p) => `${px(p[0])},${py(p[1])}`).join(" "));
      pl.setAttribute("stroke", color(n));
      pl.setAttribute("class", "curve");
      pl.setAttribute("data-series", n);
      svg.appendChild(pl);
      for (const p of pts) {
        const c = document.createElementNS(ns, "circle");
        c.setAttribute("cx", px(p[0])); c.setAttribute("cy", py(p[1])); c.setAttribute("r", 2.5);
        c.setAttribute("fill", color(n));
        const title = document.createElementNS(ns, "title");
        title.textContent = `${n} at epoch ${fmt(p[0])}: ${fmt(p[1])}`;
        c.appendChild(title);
        svg.appendChild(c);
      }
    }
  };
  for (const n of names) {
    const lab = el("label", { class: "serie" });
    const cb = el("input", { type: "checkbox", value: n });
    cb.checked = picked.has(n);
    cb.addEventListener("change", () => { if (cb.checked) picked.add(n); else picked.delete(n); draw(); });
    const sw = el("span", { class: "swatch" });
    sw.style.background = color(n);
    lab.append(cb, sw, document.createTextNode(n));
    boxes.appendChild(lab);
  }
  host.append(svg, boxes);
  draw();
}

/* MEETI record list: filters on rhythm, HR, QTc and flags over the embedded records. */
function RecordList(host, records) {
  const cols = ["study_id", "subject_id", "rhythm", "hr_bpm", "qtc_bazett_ms", "qrs_ms", "pr_ms", "flags"];
  const data = {
    columns: cols,
    rows: records.map((r) => cols.map((c) => (c === "flags" ? r.flags.join(", ") : r[c]))),
    links: { study_id: records.map((r) => r.href) },
  };
  const table = new DataTable(host, data, { pageSize: 50, search: true });
  const $ = (id) => document.getElementById(id);
  const num = (id) => { const v = $(id).value; return v === "" ? null : Number(v); };
  const apply = () => {
    const rhythm = $("f-rhythm").value, flag = $("f-flag").value;
    const hrMin = num("f-hr-min"), hrMax = num("f-hr-max"), qMin = num("f-qtc-min"), qMax = num("f-qtc-max");
    const inRange = (v, a, b) => (a === null || (v !== null && v >= a)) && (b === null || (v !== null && v <= b));
    const keep = records
      .map((r, i) => [r, i])
      .filter(([r]) => (!rhythm || r.rhythm === rhythm)
        && inRange(r.hr_bpm, hrMin, hrMax) && inRange(r.qtc_bazett_ms, qMin, qMax)
        && (!flag || (flag === "*" ? r.flags.length > 0 : flag === "-" ? r.flags.length === 0 : r.flags.includes(flag))))
      .map(([, i]) => i);
    table.order = keep;
    table.filter(table.search ? table.search.value : "");
    $("f-count").textContent = `${keep.length} of ${records.length} records`;
  };
  for (const id of ["f-rhythm", "f-flag", "f-hr-min", "f-hr-max", "f-qtc-min", "f-qtc-max"]) {
    $(id).addEventListener("input", apply);
    $(id).addEventListener("change", apply);
  }
  apply();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const host of document.querySelectorAll(".datatable")) {
    const data = readJson(host.dataset.src);
    if (data) new DataTable(host, data, { pageSize: Number(host.dataset.pageSize) || 25, search: !!host.dataset.search });
  }
  for (const host of document.querySelectorAll(".chart")) {
    const data = readJson(host.dataset.src);
    if (data) Chart(host, data);
  }
  const list = document.getElementById("record-list");
  if (list) RecordList(list, readJson("records-data"));
  document.body.dataset.ready = "1";
});
