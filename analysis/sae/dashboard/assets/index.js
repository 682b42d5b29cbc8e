// The index: rows arrive in parts (index/part-K.js calls A(columns, rows)), so the first part paints at once
// whatever the number of latents; sorting and search run over every part loaded so far.
"use strict";
const P = new URLSearchParams(location.search);
let cols = [], rows = [], parts = 0, key = 0, desc = P.get("order") !== "asc";
const body = document.getElementById("rows"), q = document.getElementById("q");
if (P.get("q")) q.value = P.get("q");

function cell(v, i) {
  const td = document.createElement("td");
  if (i === 0) {
    const a = document.createElement("a");
    a.href = `latent.html?l=${v}`;
    a.textContent = v;
    td.append(a);
  } else {
    td.textContent = typeof v === "number" ? (Number.isInteger(v) ? v : v.toPrecision(4)) : (v || "");
  }
  if (i >= 5) td.className = "l";
  return td;
}

function draw() {
  const s = q.value.trim().toLowerCase();
  const r = rows.filter(x => !s || String(x[0]) === s || (x[5] || "").toLowerCase().includes(s) ||
                        (x[x.length - 1] || "").toLowerCase().includes(s));  // the last column: tokens or stimuli
  r.sort((a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0) * (desc ? -1 : 1));
  document.getElementById("count").textContent =
    `${r.length} of ${rows.length} latents` + (parts < TOTAL_PARTS ? ` (loading ${parts}/${TOTAL_PARTS})` : "");
  if (!document.body.dataset.firstDraw) document.body.dataset.firstDraw = performance.now().toFixed(1);  // benchmark
  body.replaceChildren(...r.slice(0, 1000).map(x => {
    const tr = document.createElement("tr");
    x.forEach((v, i) => tr.append(cell(v, i)));
    return tr;
  }));
}

window.A = function (columns, part) {
  cols = columns;
  rows = rows.concat(part);
  parts += 1;
  key = Math.max(0, cols.indexOf(P.get("sort") || "frequency"));
  draw();
  if (parts < TOTAL_PARTS) load(parts);
};

function load(k) {
  const s = document.createElement("script");
  s.src = `index/part-${k}.js`;
  document.head.append(s);
}

document.querySelectorAll("th").forEach((th, i) => th.onclick = () => { desc = key === i ? !desc : true; key = i; draw(); });
q.oninput = draw;
load(0);
