// Feature dashboard: an index of every latent (search, filters) and a card per latent (top examples,
// activation histogram, logits, best matches in the other models). Data embedded as JSON; no network.
"use strict";
const D = JSON.parse(document.getElementById("dashboard").textContent);
const MODELS = Object.fromEntries(D.models.map(m => [m.name, m]));
const PER_PAGE = 100;
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmt(v) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return String(Number(v.toPrecision(3)));
}
// decoded images per model: {row: offset}
const IMAGES = {};
for (const m of D.models) {
  if (!m.images) continue;
  const bin = atob(m.images.data), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const [h, w, c] = m.images.shape, size = h * w * c;
  IMAGES[m.name] = {bytes, h, w, c, size, at: Object.fromEntries(m.images.rows.map((r, i) => [r, i * size]))};
}
function bestMatch(model, j) {
  let best = null;
  for (const other of D.models) {
    const pair = D.matches[model + "\u0000" + other.name];
    if (!pair || pair[0][j] < 0 || pair[1][j] === null) continue;
    if (!best || pair[1][j] > best.score) best = {model: other.name, latent: pair[0][j], score: pair[1][j]};
  }
  return best;
}
const ROWS = [];
for (const m of D.models) m.latents.forEach((l, j) => {
  let preview = "";
  if (l.ctx) preview = l.ctx.map(c => m.contexts[c[0]][c[2]]).slice(0, 3).join(" · ");
  else if (l.top && m.labels) preview = l.top.slice(0, 5).map(t => m.labels[t[0]]).join(" ");
  ROWS.push({model: m.name, j, l, best: bestMatch(m.name, j), preview});
});

function imageCanvas(model, row, scale) {
  const im = IMAGES[model], cv = el("canvas", {width: im.w, height: im.h, "data-row": row});
  cv.style.width = (im.w * scale) + "px"; cv.style.height = (im.h * scale) + "px";
  const ctx = cv.getContext("2d"), img = ctx.createImageData(im.w, im.h), off = im.at[row];
  for (let p = 0; p < im.h * im.w; p++) {
    for (let k = 0; k < 3; k++) img.data[4 * p + k] = im.bytes[off + p * im.c + (im.c === 3 ? k : 0)];
    img.data[4 * p + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return cv;
}
function signalCanvas(model, row) {
  const v = MODELS[model].signals[row], W = 96, H = 40, cv = el("canvas", {width: W, height: H, "data-row": row});
  const lo = Math.min(...v), hi = Math.max(...v), ctx = cv.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
  ctx.strokeStyle = "#1f5fbf"; ctx.lineWidth = 1.5; ctx.beginPath();
  v.forEach((y, i) => {
    const px = 2 + (W - 4) * i / Math.max(1, v.length - 1), py = H - 2 - (H - 4) * (y - lo) / ((hi - lo) || 1);
    if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py);
  });
  ctx.stroke();
  return cv;
}
function examples(model, j, limit) {
  const m = MODELS[model], l = m.latents[j], box = el("div", {class: "examples"});
  if (!l.top) { box.appendChild(el("p", {class: "hint"}, "never active on these inputs (dead)")); return box; }
  const top = l.top.slice(0, limit);
  if (m.kind === "tokens") {
    box.style.flexDirection = "column";
    l.ctx.slice(0, limit).forEach(([c, lo, pos, vals]) => {
      const line = el("div", {class: "ctx"}), toks = m.contexts[c];
      vals.forEach((v, i) => {
        const s = el("span", {title: `activation ${fmt(v)}`}, toks[lo + i]);
        const a = l.max > 0 ? Math.max(0, v) / l.max : 0;
        if (a > 0) s.style.background = `rgba(255,120,0,${(0.15 + 0.85 * a).toFixed(3)})`;
        if (lo + i === pos) s.classList.add("peak");
        line.appendChild(s);
      });
      line.appendChild(el("span", {class: "val"}, fmt(vals[pos - lo])));
      box.appendChild(line);
    });
  } else {
    for (const [r, v] of top) {
      const ex = el("div", {class: "ex"});
      if (m.kind === "images") ex.appendChild(imageCanvas(model, r, Math.max(1, Math.round(56 / IMAGES[model].h))));
      if (m.kind === "signals") ex.appendChild(signalCanvas(model, r));
      ex.appendChild(el("span", {}, (m.labels ? m.labels[r] + " · " : `#${r} · `) + fmt(v)));
      box.appendChild(ex);
    }
  }
  return box;
}
function histogram(l) {
  const NS = "http://www.w3.org/2000/svg", W = 300, H = 110;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H + 28); svg.setAttribute("class", "hist");
  const [counts, hi] = l.hist, peak = Math.max(...counts, 1), bw = W / counts.length;
  counts.forEach((c, i) => {
    const r = document.createElementNS(NS, "rect"), h = H * c / peak;
    r.setAttribute("x", i * bw + 0.5); r.setAttribute("width", Math.max(1, bw - 1));
    r.setAttribute("y", H - h); r.setAttribute("height", h); r.setAttribute("fill", "#e8772e");
    const t = document.createElementNS(NS, "title");
    t.textContent = `${fmt(i * hi / counts.length)}-${fmt((i + 1) * hi / counts.length)}: ${c}`;
    r.appendChild(t); svg.appendChild(r);
  });
  const axis = (x, text, anchor) => {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", x); t.setAttribute("y", H + 14); t.setAttribute("font-size", "11");
    t.setAttribute("text-anchor", anchor); t.textContent = text; svg.appendChild(t);
  };
  axis(0, "0", "start"); axis(W, fmt(hi), "end"); axis(W / 2, "activation (non-zero only)", "middle");
  const box = el("div");
  box.append(el("h3", {}, "Activation histogram"), svg);
  return box;
}
function logits(l) {
  const t = el("table", {class: "logits"}), hr = el("tr");
  hr.append(el("th", {}, "promoted"), el("th", {}, ""), el("th", {}, "suppressed"), el("th", {}, ""));
  t.appendChild(hr);
  const [up, down] = l.logits;
  for (let i = 0; i < Math.max(up.length, down.length); i++) {
    const tr = el("tr");
    tr.append(el("td", {class: "up"}, up[i] ? JSON.stringify(up[i][0]) : ""), el("td", {}, up[i] ? fmt(up[i][1]) : ""),
              el("td", {class: "down"}, down[i] ? JSON.stringify(down[i][0]) : ""),
              el("td", {}, down[i] ? fmt(down[i][1]) : ""));
    t.appendChild(tr);
  }
  const box = el("div");
  box.append(el("h3", {}, "Logits (decoder direction x unembedding)"), t);
  return box;
}
function openCard(model, j) {
  const m = MODELS[model], l = m && m.latents[j], card = document.getElementById("card");
  if (!l) return;
  card.textContent = "";
  card.dataset.model = model; card.dataset.latent = j;
  card.appendChild(el("h2", {}, `${model} · latent ${j}`));
  card.appendChild(el("p", {class: "stats"}, `density ${fmt(l.density)} (fraction of ${m.n} ${m.kind === "tokens" ?
    "tokens" : "inputs"} where it fires) · max activation ${fmt(l.max)}` + (l.tag ? ` · tag: ${l.tag}` : "")));
  card.appendChild(el("h3", {}, "Top-activating examples"));
  const ex = examples(model, j, 12); ex.classList.add("top-examples"); card.appendChild(ex);
  const row = el("div", {class: "row"});
  if (l.hist) row.appendChild(histogram(l));
  if (l.logits) row.appendChild(logits(l));
  card.appendChild(row);
  card.appendChild(el("h3", {}, "Best matches in the other models"));
  const ms = el("div", {class: "matches"});
  for (const other of D.models) {
    if (other.name === model) continue;
    const pair = D.matches[model + "\u0000" + other.name], box = el("div", {class: "match"});
    if (!pair) { box.appendChild(el("p", {class: "hint"}, `${other.name}: no match measured`)); ms.appendChild(box); continue; }
    const k = pair[0][j], s = pair[1][j];
    if (k < 0) { box.appendChild(el("p", {class: "hint"}, `${other.name}: no match (latent dead)`)); ms.appendChild(box); continue; }
    const h = el("h4"), a = el("a", {href: `#${encodeURIComponent(other.name)}/${k}`}, `${other.name} · latent ${k}`);
    h.append(a, el("span", {class: s >= D.threshold ? "matched" : "hint"},
                    ` score ${fmt(s)}${s >= D.threshold ? " (matched)" : ` (below ${D.threshold})`}`));
    box.append(h, examples(other.name, k, 6));
    ms.appendChild(box);
  }
  if (!ms.children.length) ms.appendChild(el("p", {class: "hint"}, "only one model"));
  card.appendChild(ms);
  document.querySelectorAll("#index tr.open").forEach(r => r.classList.remove("open"));
  const tr = document.querySelector(`#index tr[data-key="${CSS.escape(model + "/" + j)}"]`);
  if (tr) tr.classList.add("open");
}

// index + filters
const F = document.getElementById("filters");
const q = el("input", {type: "search", placeholder: "search: latent id, model, tag, top tokens/labels", "aria-label": "search"});
const fm = el("select", {"aria-label": "model"}), ft = el("select", {"aria-label": "tag"}), fmatch = el("select", {"aria-label": "matched"});
fm.appendChild(el("option", {value: ""}, "all models"));
D.models.forEach(m => fm.appendChild(el("option", {value: m.name}, m.name)));
const tags = [...new Set(ROWS.map(r => r.l.tag).filter(t => t))];
ft.appendChild(el("option", {value: ""}, "any tag"));
tags.forEach(t => ft.appendChild(el("option", {value: t}, t)));
[["", "matched or not"], ["yes", `matched (score >= ${D.threshold})`], ["no", "not matched"]].forEach(([v, t]) =>
  fmatch.appendChild(el("option", {value: v}, t)));
const dmin = el("input", {type: "number", step: "any", min: 0, max: 1, placeholder: "min density", "aria-label": "min density"});
const dmax = el("input", {type: "number", step: "any", min: 0, max: 1, placeholder: "max density", "aria-label": "max density"});
const info = el("span"), prev = el("button", {}, "previous"), next = el("button", {}, "next");
F.append(q, fm, ft, fmatch, dmin, dmax, info, prev, next);
let shown = ROWS, page = 0, sortKey = null, sortDesc = true;
const COLUMNS = [["model", r => r.model], ["latent", r => r.j], ["density", r => r.l.density], ["max", r => r.l.max],
                 ["tag", r => r.l.tag || ""], ["best match", r => r.best ? r.best.score : -Infinity],
                 ["top examples", null]];
function sortBy(name, key) {
  sortDesc = sortKey === name ? !sortDesc : name !== "model" && name !== "latent" && name !== "tag";
  sortKey = name;
  const s = sortDesc ? -1 : 1;
  ROWS.sort((a, b) => { const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * s; });
  filter();
}
function filter() {
  const s = q.value.trim().toLowerCase(), lo = parseFloat(dmin.value), hi = parseFloat(dmax.value);
  shown = ROWS.filter(r => (!fm.value || r.model === fm.value) && (!ft.value || r.l.tag === ft.value) &&
    (isNaN(lo) || r.l.density >= lo) && (isNaN(hi) || r.l.density <= hi) &&
    (!fmatch.value || (fmatch.value === "yes") === !!(r.best && r.best.score >= D.threshold)) &&
    (!s || `${r.model} ${r.j} ${r.l.tag || ""} ${r.preview}`.toLowerCase().includes(s)));
  page = 0; draw();
}
function draw() {
  const box = document.getElementById("index"), t = el("table"), hr = el("tr");
  COLUMNS.forEach(([c, key]) => {
    const th = el("th", {title: key ? "sort by " + c : ""}, c);
    if (key && sortKey === c) th.classList.add(sortDesc ? "sorted-desc" : "sorted-asc");
    if (key) th.addEventListener("click", () => sortBy(c, key));
    hr.appendChild(th);
  });
  t.appendChild(hr);
  for (const r of shown.slice(page * PER_PAGE, (page + 1) * PER_PAGE)) {
    const tr = el("tr", {class: "pick", "data-key": `${r.model}/${r.j}`});
    tr.append(el("td", {}, r.model), el("td", {class: "num"}, String(r.j)), el("td", {class: "num"}, fmt(r.l.density)),
              el("td", {class: "num"}, fmt(r.l.max)), el("td", {}, r.l.tag || ""),
              el("td", {}, r.best ? `${r.best.model}:${r.best.latent} (${fmt(r.best.score)})` : "–"),
              el("td", {}, r.preview.slice(0, 60)));
    tr.addEventListener("click", () => { location.hash = `${encodeURIComponent(r.model)}/${r.j}`; });
    t.appendChild(tr);
  }
  box.textContent = ""; box.appendChild(t);
  const end = Math.min(shown.length, (page + 1) * PER_PAGE);
  info.textContent = `${shown.length ? page * PER_PAGE + 1 : 0}-${end} of ${shown.length} latents`;
  prev.disabled = page === 0; next.disabled = end >= shown.length;
}
[q, dmin, dmax].forEach(e => e.addEventListener("input", filter));
[fm, ft, fmatch].forEach(e => e.addEventListener("change", filter));
prev.addEventListener("click", () => { page--; draw(); });
next.addEventListener("click", () => { page++; draw(); });
function fromHash() {
  const h = decodeURIComponent(location.hash.slice(1)), i = h.lastIndexOf("/");
  if (i > 0) openCard(h.slice(0, i), parseInt(h.slice(i + 1), 10));
}
window.addEventListener("hashchange", fromHash);
draw(); fromHash();
