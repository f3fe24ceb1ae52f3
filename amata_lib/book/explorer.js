// The kernel-free schedule explorer of amata_lib.book.explorer.static_explorer_html, shipped with the
// library and inlined into the page (the HTML book loads nothing from elsewhere). It runs once per
// explorer with `root` = the explorer's <div>. Each function names the Python it mirrors; the
// operations are done in the same order, so the IEEE doubles are the same as Python's (Math.pow and
// C's pow may differ in the last bit, which changes K_t only if K_min * (K_max / K_min) ** (t / T) lay
// within that bit of a half-integer). tests/test_browser.py checks the page against the library.
"use strict";
const cfg = JSON.parse(root.getAttribute("data-config"));
const el = name => document.getElementById(root.id + "-" + name);
const W = 300, H = 230, LEFT = 50, RIGHT = 12, TOP = 28, BOTTOM = 42;
const C0 = "#1f77b4", C1 = "#ff7f0e";

// format(x, ".3g") of Python, for numbers in [1e-4, 1e3) (all the sliders allow)
const g3 = x => { const s = x.toPrecision(3); return s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s; };
const esc = s => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;");
const roundHalfUp = x => Math.floor(x + 0.5);  // schedules._to_int(x, "round")

function read() {
  return {shape: cfg.shapes[Number(el("shape").value)], kMin: Number(el("k_min").value),
          kMax: Number(el("k_max").value), tau: Number(el("tau").value), eps: Number(el("eps").value),
          epochs: Number(el("epochs").value)};
}

// explorer._step: the K of each of n equal stages
function stages(s) {
  const n = Math.min(cfg.stepStages, s.epochs, s.kMax - s.kMin + 1), ks = [];
  for (let i = 0; i < n; i++) ks.push(n === 1 ? s.kMax : roundHalfUp(s.kMin + (s.kMax - s.kMin) * i / (n - 1)));
  return ks;
}

// schedules.Amata.real_steps and schedules.Exponential.real_steps
function realSteps(s, t) {
  if (s.shape === "linear") return s.kMin + (s.kMax - s.kMin) * t / s.epochs;
  return s.kMin * Math.pow(s.kMax / s.kMin, t / s.epochs);
}

// Constant.plan, Step.plan and _Annealed.plan: K_t of every epoch
function schedule(s) {
  const ks = [], st = s.shape === "step" ? stages(s) : null;
  for (let t = 0; t < s.epochs; t++) {
    if (s.shape === "constant") ks.push(s.kMax);
    else if (st) ks.push(st[Math.floor(t * st.length / s.epochs)]);
    else ks.push(Math.min(Math.max(roundHalfUp(realSteps(s, t)), s.kMin), s.kMax));
  }
  return ks;
}

// explorer.explore with k_ref = K_max
function explore(s) {
  const steps = schedule(s), alpha = steps.map(k => s.tau / k);
  let total = 0;
  const passes = steps.map(k => (total += k + 1));
  const refPasses = steps.map((k, t) => (s.kMax + 1) * (t + 1));
  const travel = Math.min(...steps.map((k, t) => k * alpha[t]));
  const warning = travel < s.eps * (1 - 1e-9)
    ? `travel K_t * alpha_t = ${g3(travel)} < eps = ${g3(s.eps)}: the steps cannot reach ` +
      "the boundary of the eps-ball from the clean input" : "";
  return {steps, alpha, passes, refPasses, total, ratio: total / ((s.kMax + 1) * s.epochs), warning};
}

function ticks(lo, hi) {
  const raw = (hi - lo) / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * p).find(v => v >= raw), out = [];
  for (let i = Math.ceil(lo / step); i * step <= hi; i++) out.push(Number((i * step).toPrecision(10)));
  return out;
}

// one panel at x0 of width W; lines: {pts: [[x, y], ...], color, dash, label}; legend: its corner, [x, y] in
// 0..1, or null to write each label above the start of its line
function panel(x0, title, xlabel, xmax, lines, legend) {
  const ys = lines.flatMap(l => l.pts.map(p => p[1]));
  let lo = Math.min(...ys), hi = Math.max(...ys);
  const pad = hi > lo ? 0.08 * (hi - lo) : 0.1 * Math.abs(hi) || 1;
  lo -= pad; hi += pad;
  const w = W - LEFT - RIGHT, h = H - TOP - BOTTOM;
  const sx = x => x0 + LEFT + x / xmax * w, sy = y => TOP + (hi - y) / (hi - lo) * h;
  let svg = `<rect x="${x0 + LEFT}" y="${TOP}" width="${w}" height="${h}" fill="none" stroke="#888"/>` +
    `<text x="${x0 + LEFT + w / 2}" y="18" text-anchor="middle">${esc(title)}</text>` +
    `<text x="${x0 + LEFT + w / 2}" y="${H - 6}" text-anchor="middle">${esc(xlabel)}</text>`;
  for (const v of ticks(lo, hi)) {
    svg += `<line x1="${x0 + LEFT - 4}" x2="${x0 + LEFT}" y1="${sy(v)}" y2="${sy(v)}" stroke="#888"/>` +
      `<text x="${x0 + LEFT - 6}" y="${sy(v) + 4}" text-anchor="end">${v}</text>`;
  }
  for (const v of ticks(0, xmax)) {
    svg += `<line x1="${sx(v)}" x2="${sx(v)}" y1="${TOP + h}" y2="${TOP + h + 4}" stroke="#888"/>` +
      `<text x="${sx(v)}" y="${TOP + h + 17}" text-anchor="middle">${v}</text>`;
  }
  lines.forEach((l, i) => {
    const pts = l.pts.map(p => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    svg += `<polyline points="${pts}" fill="none" stroke="${l.color}" stroke-width="1.6"` +
      (l.dash ? ` stroke-dasharray="${l.dash}"/>` : "/>");
    const lx = legend ? x0 + LEFT + 8 + legend[0] * (w - 130) : sx(l.pts[0][0]) + 4;
    const ly = legend ? TOP + 18 + i * 16 + legend[1] * (h - 40) : sy(l.pts[0][1]) - 4;
    if (l.label) svg += `<text x="${lx}" y="${ly}" fill="${l.color}">${esc(l.label)}</text>`;
  });
  return svg;
}

const stairs = vals => vals.flatMap((v, t) => [[t, v], [t + 1, v]]);
const cumulative = vals => [[0, 0]].concat(vals.map((v, t) => [t + 1, v]));

// explorer.plot_exploration: K_t, alpha_t and cumulative passes against PGD-K_max
function plot(s, r) {
  const T = s.epochs, name = cfg.labels[s.shape], ref = "PGD-" + s.kMax;
  const flat = y => [[0, y], [T, y]];
  return `<svg viewBox="0 0 ${3 * W} ${H}" width="100%" font-family="sans-serif" font-size="13" role="img" ` +
    `aria-label="K_t, alpha_t and cumulative passes per epoch">` +
    panel(0, "steps per minibatch K_t", "epoch t", T,
          [{pts: stairs(r.steps), color: C0, label: name}, {pts: flat(s.kMax), color: "#000", dash: "5 3", label: ref}],
          [1, 1]) +
    panel(W, "step size α_t = τ / K_t", "epoch t", T,
          [{pts: stairs(r.alpha), color: C1, label: ""},
           {pts: flat(s.eps), color: "#777", dash: "2 2", label: "α = ε"}],
          null) +
    panel(2 * W, `cumulative passes (ratio ${r.ratio.toFixed(2)})`, "epochs done", T,
          [{pts: cumulative(r.passes), color: C0, label: name},
           {pts: cumulative(r.refPasses), color: "#000", dash: "5 3", label: ref}],
          [0, 0]) +
    "</svg>";
}

function showSettings(s) {
  el("shape-value").textContent = cfg.labels[s.shape];
  for (const name of ["k_min", "k_max", "epochs"]) el(name + "-value").textContent = el(name).value;
  for (const name of ["tau", "eps"]) el(name + "-value").textContent = Number(el(name).value).toFixed(2);
}

function setList(name, values, text) {
  el(name).textContent = text;
  el(name).dataset.values = JSON.stringify(values);
}

function update() {
  const s = read(), summary = el("summary");
  showSettings(s);
  if (s.kMin > s.kMax) {
    summary.textContent = `invalid settings: k_min must be <= k_max, got k_min=${s.kMin} > k_max=${s.kMax}`;
    summary.dataset.costRatio = "null";
    setList("steps", [], "");
    setList("alpha", [], "");
    el("warning").textContent = "";
    el("plot").innerHTML = "";
    return;
  }
  const r = explore(s);
  summary.textContent = `${cfg.labels[s.shape]}: ${r.total} passes per minibatch position vs ` +
    `${r.refPasses[s.epochs - 1]} for PGD-${s.kMax}, cost ratio ${r.ratio.toFixed(3)}`;
  summary.dataset.costRatio = JSON.stringify(r.ratio);
  setList("steps", r.steps, r.steps.join(", "));
  setList("alpha", r.alpha, r.alpha.map(g3).join(", "));
  el("warning").textContent = r.warning;
  el("plot").innerHTML = plot(s, r);
}

for (const name of ["shape", "k_min", "k_max", "tau", "eps", "epochs"]) el(name).addEventListener("input", update);
update();
