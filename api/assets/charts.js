// Hand-written SVG charts for the birdsong dashboard. Each function draws
// into a container element and gives the SVG a title and a text summary
// (role="img" + aria-label) so the numbers are available without sight.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const fmt = (v) => (Math.abs(v) >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(2));

  function svg(el, w, h, label, body) {
    el.innerHTML = `<svg xmlns="${NS}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(label)}"><title>${esc(label)}</title>${body}</svg>`;
  }

  function empty(el, text) {
    el.innerHTML = `<p class="muted">${esc(text)}</p>`;
  }

  // items: [{label, value}], drawn as horizontal bars (long labels fit).
  function hbar(el, items, label, opts = {}) {
    if (!items.length) return empty(el, opts.emptyText || "No data yet.");
    const row = 22, left = 150, w = 520, h = items.length * row + 10;
    const max = Math.max(...items.map((i) => i.value), 1);
    let body = "";
    items.forEach((it, i) => {
      const y = 5 + i * row, bw = ((w - left - 60) * it.value) / max;
      const name = it.label.length > 22 ? it.label.slice(0, 21) + "…" : it.label;
      body += `<text x="${left - 6}" y="${y + 14}" text-anchor="end">${esc(name)}</text>`;
      body += `<rect class="bar" x="${left}" y="${y + 2}" width="${Math.max(bw, 1)}" height="${row - 6}"><title>${esc(it.label)}: ${fmt(it.value)}</title></rect>`;
      body += `<text x="${left + bw + 4}" y="${y + 14}">${fmt(it.value)}</text>`;
    });
    const summary = items.map((i) => `${i.label} ${fmt(i.value)}`).join(", ");
    svg(el, w, h, `${label}: ${summary}`, body);
  }

  // items: [{label, value}], vertical bars; every `every`-th label shown.
  function vbar(el, items, label, opts = {}) {
    if (!items.length || items.every((i) => !i.value)) return empty(el, opts.emptyText || "No data yet.");
    const w = 520, h = 200, left = 36, bottom = 28, top = 10;
    const max = Math.max(...items.map((i) => i.value), 1);
    const step = (w - left - 6) / items.length, every = opts.every || 1;
    let body = `<line class="axis" x1="${left}" y1="${h - bottom}" x2="${w}" y2="${h - bottom}"/>`;
    body += `<text x="${left - 4}" y="${top + 8}" text-anchor="end">${fmt(max)}</text><text x="${left - 4}" y="${h - bottom}" text-anchor="end">0</text>`;
    items.forEach((it, i) => {
      const bh = ((h - bottom - top) * it.value) / max, x = left + i * step;
      body += `<rect class="${opts.cls || "bar"}" x="${x + 1}" y="${h - bottom - bh}" width="${Math.max(step - 2, 1)}" height="${bh}"><title>${esc(it.label)}: ${fmt(it.value)}</title></rect>`;
      if (i % every === 0) body += `<text x="${x + step / 2}" y="${h - bottom + 16}" text-anchor="middle">${esc(it.label)}</text>`;
    });
    const summary = items.filter((i) => i.value).map((i) => `${i.label}: ${fmt(i.value)}`).join(", ");
    svg(el, w, h, `${label}. ${summary}`, body);
  }

  // points: [{label, value}] in order; values in [0, yMax].
  function line(el, points, label, yMax) {
    if (!points.length) return empty(el, "No data yet.");
    const w = 520, h = 200, left = 36, bottom = 28, top = 10;
    const max = yMax || Math.max(...points.map((p) => p.value), 1);
    const n = points.length, dx = n > 1 ? (w - left - 10) / (n - 1) : 0;
    const xy = points.map((p, i) => [left + 5 + (n > 1 ? i * dx : (w - left) / 2), h - bottom - ((h - bottom - top) * p.value) / max]);
    let body = `<line class="axis" x1="${left}" y1="${h - bottom}" x2="${w}" y2="${h - bottom}"/><line class="axis" x1="${left}" y1="${top}" x2="${left}" y2="${h - bottom}"/>`;
    body += `<text x="${left - 4}" y="${top + 8}" text-anchor="end">${fmt(max)}</text><text x="${left - 4}" y="${h - bottom}" text-anchor="end">0</text>`;
    body += `<polyline class="line" points="${xy.map((p) => p.join(",")).join(" ")}"/>`;
    xy.forEach(([x, y], i) => { body += `<circle class="bar" cx="${x}" cy="${y}" r="3.5"><title>${esc(points[i].label)}: ${fmt(points[i].value)}</title></circle>`; });
    body += `<text x="${xy[0][0]}" y="${h - 8}">${esc(points[0].label)}</text>`;
    if (n > 1) body += `<text x="${xy[n - 1][0]}" y="${h - 8}" text-anchor="end">${esc(points[n - 1].label)}</text>`;
    const summary = points.map((p) => `${p.label}: ${fmt(p.value)}`).join(", ");
    svg(el, w, h, `${label}. ${summary}`, body);
  }

  // matrix[true][predicted], classes in order.
  function confusion(el, classes, matrix, label) {
    if (!classes.length || !matrix.length) return empty(el, "This version has no confusion matrix.");
    const n = classes.length, cell = Math.max(18, Math.min(48, Math.floor(380 / n))), left = 130, top = 24;
    const w = left + n * cell + 10, h = top + n * cell + 40;
    const max = Math.max(1, ...matrix.flat());
    const short = (s) => (s.length > 18 ? s.slice(0, 17) + "…" : s);
    let body = `<text x="${left + (n * cell) / 2}" y="14" text-anchor="middle">predicted</text>`;
    for (let t = 0; t < n; t++) {
      body += `<text x="${left - 6}" y="${top + t * cell + cell / 2 + 4}" text-anchor="end">${esc(short(classes[t]))}</text>`;
      for (let p = 0; p < n; p++) {
        const v = (matrix[t] && matrix[t][p]) || 0, a = v / max;
        body += `<rect x="${left + p * cell}" y="${top + t * cell}" width="${cell - 1}" height="${cell - 1}" fill="${t === p ? "var(--bar)" : "var(--bar2)"}" fill-opacity="${(0.08 + 0.92 * a).toFixed(2)}"><title>true ${esc(classes[t])}, predicted ${esc(classes[p])}: ${v}</title></rect>`;
        if (cell >= 24) body += `<text x="${left + p * cell + cell / 2}" y="${top + t * cell + cell / 2 + 4}" text-anchor="middle">${v}</text>`;
      }
    }
    for (let p = 0; p < n; p++) {
      body += `<text x="${left + p * cell + cell / 2}" y="${top + n * cell + 14}" text-anchor="middle">${p + 1}</text>`;
    }
    body += `<text x="${left}" y="${top + n * cell + 32}">columns: ${esc(classes.map((c, i) => `${i + 1} ${short(c)}`).join(", "))}</text>`;
    const summary = classes.map((c, t) => `${c}: ${(matrix[t] || [])[t] || 0} of ${(matrix[t] || []).reduce((a, b) => a + b, 0)} right`).join("; ");
    svg(el, w, h, `${label}. ${summary}`, body);
  }

  window.Charts = { hbar, vbar, line, confusion, esc };
})();
