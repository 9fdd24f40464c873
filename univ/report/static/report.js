// report.html: renders the tables embedded as JSON (sort, filter, pages, number format, significance) and
// draws tidy layer x layer tables as heatmaps with hover values. No network, no libraries.
"use strict";
const PAGE_ROWS = 50;
const SIG = /^(p|q|p_value|q_value|pvalue|qvalue|p_.*|q_.*)$/i;
function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return Math.abs(v) >= 1e5 ? v.toLocaleString("en") : String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
const hover = el("div", {class: "hover"});
document.body.appendChild(hover);
function showHover(ev, text) {
  hover.textContent = text; hover.style.display = "block";
  hover.style.left = (ev.clientX + 12) + "px"; hover.style.top = (ev.clientY + 12) + "px";
}
function hideHover() { hover.style.display = "none"; }

function renderTable(host, t) {
  const tools = el("div", {class: "tbl-tools"});
  const search = el("input", {type: "search", placeholder: "filter rows (text in any column)", "aria-label": "filter"});
  const info = el("span");
  const prev = el("button", {}, "previous"), next = el("button", {}, "next");
  tools.append(search, info, prev, next);
  const wrap = el("div", {class: "tbl-wrap"});
  const table = el("table", {"data-name": t.name});
  const thead = el("thead"), tbody = el("tbody");
  const hr = el("tr");
  t.columns.forEach((c, i) => {
    const th = el("th", {title: "sort by " + c}, c);
    if (/baseline/i.test(c)) th.classList.add("baseline");
    th.addEventListener("click", () => sortBy(i, th));
    hr.appendChild(th);
  });
  thead.appendChild(hr); table.append(thead, tbody); wrap.appendChild(table);
  host.append(tools, wrap);
  let rows = t.rows.slice(), shown = rows, page = 0, sortCol = -1, asc = true;
  function sortBy(i, th) {
    asc = sortCol === i ? !asc : true; sortCol = i;
    hr.querySelectorAll("th").forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
    th.classList.add(asc ? "sorted-asc" : "sorted-desc");
    const s = asc ? 1 : -1;
    rows.sort((a, b) => {
      const x = a[i], y = b[i];
      if (x === null) return 1; if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * s;
    });
    filter();
  }
  function filter() {
    const q = search.value.trim().toLowerCase();
    shown = q ? rows.filter(r => r.some(v => v !== null && fmt(v).toLowerCase().includes(q))) : rows;
    page = 0; draw();
  }
  function draw() {
    tbody.textContent = "";
    const start = page * PAGE_ROWS;
    for (const r of shown.slice(start, start + PAGE_ROWS)) {
      const tr = el("tr");
      r.forEach((v, i) => {
        const td = el("td", {}, fmt(v)), link = (t.links || {})[i];
        if (link && v !== null && link[1][r[link[0]]]) {
          td.textContent = "";
          const m = r[link[0]];
          td.appendChild(el("a", {href: `${link[1][m]}#${encodeURIComponent(m)}/${v}`, title: "open its card"}, fmt(v)));
        }
        if (t.kinds[i] === "num") td.classList.add("num");
        if (v === null) { td.classList.add("null"); td.textContent = "–"; }
        if (typeof v === "number" && SIG.test(t.columns[i]) && v < 0.05) {
          td.classList.add("sig"); td.title = "below 0.05";
        }
        if (/baseline/i.test(t.columns[i])) td.classList.add("baseline");
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    }
    const end = Math.min(shown.length, start + PAGE_ROWS);
    info.textContent = `rows ${shown.length ? start + 1 : 0}-${end} of ${shown.length}` +
      (shown.length < t.rows.length ? ` (filtered from ${t.rows.length})` : "") +
      (t.total > t.rows.length ? `; the page holds ${t.rows.length} of ${t.total}` : "");
    prev.disabled = page === 0; next.disabled = end >= shown.length;
  }
  prev.addEventListener("click", () => { page--; draw(); });
  next.addEventListener("click", () => { page++; draw(); });
  search.addEventListener("input", filter);
  draw();
}

// magma-like ramp, dark (low) to light (high)
const RAMP = [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]];
function color(v, lo, hi) {
  if (v === null || !isFinite(v)) return "#ccc";
  let x = Math.max(0, Math.min(1, (v - lo) / ((hi - lo) || 1))) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
  const c = RAMP[i].map((a, k) => Math.round(a + (RAMP[i + 1][k] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
function renderGrid(host, t) {
  const col = n => t.columns.indexOf(n);
  const ia = col("layer_a"), ib = col("layer_b"), iv = col("value");
  const keys = ["model_a", "model_b", "metric"].filter(k => col(k) >= 0);
  const ibase = ["baseline_mean", "baseline"].map(col).find(i => i >= 0);
  const ip = ["q_value", "p_value"].map(col).find(i => i >= 0);
  const combos = new Map();
  for (const r of t.rows) {
    const k = keys.map(n => r[col(n)]).join(" | ");
    if (!combos.has(k)) combos.set(k, []);
    combos.get(k).push(r);
  }
  const box = el("div", {class: "grid-box"});
  const tools = el("div", {class: "grid-tools"});
  const pick = el("select", {"aria-label": "heatmap"});
  for (const k of combos.keys()) pick.appendChild(el("option", {value: k}, k || "all rows"));
  tools.append(el("span", {}, `Heatmap (${keys.join(" | ") || "value"}):`), pick);
  const out = el("div");
  box.append(tools, out);
  host.parentNode.insertBefore(box, host);
  const vals = t.rows.map(r => r[iv]).filter(v => typeof v === "number");
  const lo = Math.min(0, ...vals), hi = Math.max(1, ...vals);
  function draw() {
    out.textContent = "";
    const rs = combos.get(pick.value) || [];
    const la = [...new Set(rs.map(r => r[ia]))], lb = [...new Set(rs.map(r => r[ib]))];
    const g = el("div", {class: "hm", role: "img", "aria-label": "heatmap " + pick.value});
    g.style.gridTemplateColumns = `auto repeat(${lb.length}, auto)`;
    g.appendChild(el("div", {class: "lab"}, "A \\ B"));
    lb.forEach(b => g.appendChild(el("div", {class: "lab"}, String(b))));
    const at = new Map(rs.map(r => [r[ia] + "\u0000" + r[ib], r]));
    let bases = [];
    for (const a of la) {
      g.appendChild(el("div", {class: "lab"}, String(a)));
      for (const b of lb) {
        const r = at.get(a + "\u0000" + b);
        const v = r ? r[iv] : null;
        const d = el("div", {class: "cell"}, v === null ? "" : fmt(v));
        d.style.background = color(v, lo, hi);
        if (v !== null && (v - lo) / ((hi - lo) || 1) > 0.6) d.style.color = "#111";
        let tip = `${a} x ${b}\nvalue ${fmt(v)}`;
        if (r && ibase !== undefined && r[ibase] !== null) { tip += `\nbaseline ${fmt(r[ibase])}`; bases.push(r[ibase]); }
        if (r && ip !== undefined && r[ip] !== null) {
          tip += `\n${t.columns[ip]} ${fmt(r[ip])}`;
          if (r[ip] >= 0.05) { d.classList.add("ns"); tip += " (not significant)"; }
        }
        d.addEventListener("mousemove", ev => showHover(ev, tip));
        d.addEventListener("mouseleave", hideHover);
        g.appendChild(d);
      }
    }
    const legend = el("div", {class: "hm-legend"});
    const bar = el("div", {class: "hm-bar"});
    bar.style.background = `linear-gradient(to right, ${RAMP.map(c => `rgb(${c})`).join(",")})`;
    if (bases.length) {
      const mb = bases.reduce((s, x) => s + x, 0) / bases.length;
      const mark = el("div", {class: "base", title: `mean baseline ${fmt(mb)}`});
      mark.style.left = (100 * Math.max(0, Math.min(1, (mb - lo) / ((hi - lo) || 1)))) + "%";
      bar.appendChild(mark);
      legend.append(el("span", {}, fmt(lo)), bar, el("span", {}, fmt(hi)),
                    el("span", {}, `value (${pick.value.split(" | ").pop()}); black tick: mean baseline ${fmt(mb)}` +
                       (ip !== undefined ? `; hatched: ${t.columns[ip]} >= 0.05` : "")));
    } else {
      legend.append(el("span", {}, fmt(lo)), bar, el("span", {}, fmt(hi)), el("span", {}, "value"));
    }
    out.append(g, legend);
  }
  pick.addEventListener("change", draw);
  draw();
}

const TABLES = JSON.parse(document.getElementById("tables").textContent);
for (const host of document.querySelectorAll("div.table[data-table]")) {
  const t = TABLES[host.dataset.table];
  if (t.grid) renderGrid(host, t);
  renderTable(host, t);
}
