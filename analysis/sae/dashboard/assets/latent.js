// One latent's page: latent.html?l=N loads latents/N.js, which calls L(data). Every text goes in as
// textContent (never as HTML), so corpus text, stimulus ids and explanations cannot inject markup.
"use strict";
const P = new URLSearchParams(location.search);
const ID = parseInt(P.get("l") || "0", 10);
const main = document.getElementById("page");
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...kids) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function fmt(v) { return Number(v).toPrecision(4).replace(/\.?0+(e|$)/, "$1"); }

// A bar chart with its x axis' end labels and both axes named (units included), as site.py's bars_svg draws it.
function bars(values, labels, axes) {
  const w = 420, h = 90, left = 16, top = Math.max(...values, 0) || 1, bw = w / Math.max(values.length, 1);
  const svg = el("svg:svg", {class: "hist", width: w + left, height: h + 30, role: "img"});
  values.forEach((c, i) => {
    const bh = h * c / top;
    const r = el("svg:rect", {x: (left + i * bw).toFixed(1), y: (h - bh).toFixed(1),
                              width: Math.max(bw - 1, 1).toFixed(1), height: bh.toFixed(1), fill: "#4a7bd0"});
    r.append(el("svg:title", {}, String(c)));
    svg.append(r);
  });
  svg.append(el("svg:text", {x: 12, y: h / 2, "font-size": 11, "text-anchor": "middle",
                             transform: `rotate(-90 12 ${h / 2})`}, axes[1]),
             el("svg:text", {x: left, y: h + 13, "font-size": 11}, labels[0]),
             el("svg:text", {x: left + w, y: h + 13, "font-size": 11, "text-anchor": "end"}, labels[1]),
             el("svg:text", {x: left + w / 2, y: h + 27, "font-size": 11, "text-anchor": "middle"}, axes[0]));
  return svg;
}

function context([label, act, own, tokens, values], max) {
  const cell = el("td", {class: "l ctx"});
  if (!tokens.length) cell.append(el("span", {class: "v"}, "no active value in this band"));
  tokens.forEach((t, i) => {
    const a = max > 0 ? Math.min(Math.max(values[i] / max, 0), 1) : 0;
    cell.append(el("span", {class: i === own ? "t own" : "t", style: `background:rgba(255,110,0,${a.toFixed(3)})`,
                            title: fmt(values[i]), "data-act": String(values[i])}, t));
  });
  return el("tr", {}, el("td", {class: "l v"}, label), el("td", {}, fmt(act)), cell);
}

function heat(grid, max) {
  const svg = el("svg:svg", {class: "heat", viewBox: `0 0 ${grid[0].length} ${grid.length}`,
                             preserveAspectRatio: "none", "data-rows": grid.length, "data-cols": grid[0].length});
  grid.forEach((row, r) => row.forEach((v, c) => {
    const o = max > 0 ? Math.min(Math.max(v / max, 0), 1) * 0.75 : 0;
    const cell = el("svg:rect", {x: c, y: r, width: 1, height: 1, fill: "rgb(255,80,0)", "fill-opacity": o.toFixed(3)});
    cell.append(el("svg:title", {}, String(v)));
    svg.append(cell);
  }));
  return svg;
}

function stimulus([label, act, sid, example, grid], max) {
  if (example < 0) return el("figure", {class: "stim"}, el("figcaption", {}, el("span", {class: "v"},
                                                                             `${label}: no active value in this band`)));
  const thumb = el("div", {class: "thumb"}, el("img", {src: `thumbs/${example}.jpg`, alt: sid, width: 128, height: 128}));
  if (grid) thumb.append(heat(grid, max));
  return el("figure", {class: "stim", "data-stimulus": sid, "data-act": String(act)}, thumb,
            el("figcaption", {}, sid + " ", el("span", {class: "v"}, `${label} · ${fmt(act)}`)));
}

function section(title, node) { main.append(el("h2", {}, title), node); }

window.L = function (d) {
  document.title = `latent ${d.latent}`;
  main.append(el("p", {}, el("a", {href: "index.html"}, "all latents")), el("h1", {}, `Latent ${d.latent}`));
  if (d.explanation) main.append(el("p", {id: "explanation"}, el("b", {}, "Explanation: "), d.explanation));
  const sc = Object.entries(d.scores || {});
  if (sc.length) main.append(el("p", {id: "scores"}, el("b", {}, "Explanation scores (balanced accuracy): "),
                                sc.map(([k, v]) => `${k} ${fmt(v)}`).join(" · ")));
  main.append(el("p", {}, "firing frequency ", el("b", {}, fmt(d.frequency)), " · max activation ",
                 el("b", {}, fmt(d.max)), " · mean when active ", el("b", {}, fmt(d.mean))));
  section("Activation histogram", bars(d.hist, d.edges, ["activation (raw units, log scale)", "active rows"]));
  if (d.stimuli) {
    section("Top stimuli", el("div", {id: "top", class: "stims"}, ...d.stimuli.map(s => stimulus(s, d.max))));
    section("Samples by activation quantile",
            el("div", {id: "quantiles", class: "stims"}, ...d.stimulus_quantiles.map(s => stimulus(s, d.max))));
  } else {
    section("Top activations", el("table", {id: "top"}, ...d.top.map(c => context(c, d.max))));
    section("Samples by activation quantile", el("table", {id: "quantiles"}, ...d.quantiles.map(c => context(c, d.max))));
  }
  if (d.promoted.length) {
    const t = el("table", {id: "logits"}, el("tr", {}, el("th", {class: "l"}, "promoted"), el("th"),
                                             el("th", {class: "l"}, "suppressed"), el("th")));
    d.promoted.forEach(([a, x], i) => {
      const [b, y] = d.suppressed[i];
      t.append(el("tr", {}, el("td", {class: "l"}, a), el("td", {}, (x >= 0 ? "+" : "") + x.toFixed(3)),
                  el("td", {class: "l"}, b), el("td", {}, (y >= 0 ? "+" : "") + y.toFixed(3))));
    });
    section("Logit effects", t);
  }
  section("Nearest latents (decoder cosine)", el("ul", {id: "nearest"}, ...d.nearest.map(([n, c]) =>
    el("li", {}, el("a", {href: `latent.html?l=${n}`}, `latent ${n}`), " ", el("span", {class: "v"}, `cos ${c.toFixed(3)}`)))));
  document.body.dataset.drawn = performance.now().toFixed(1);  // read by tests/benchmarks/bench_dashboard.py
};

const s = document.createElement("script");
s.src = `latents/${ID}.js`;
s.onerror = () => main.append(el("p", {id: "missing"}, `No latent ${ID} in this dashboard.`));
document.head.append(s);
