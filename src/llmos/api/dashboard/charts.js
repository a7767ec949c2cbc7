// Time-series line charts drawn as SVG (no library): a y axis from 0 to a round
// maximum, time labels along x, one path per series (gaps where a value is null),
// and a legend with each series' latest value.

import { clock, h, s } from "./dom.js";

const W = 560;
const H = 190;
const PAD = { left: 48, right: 12, top: 10, bottom: 24 };

/** A round step so that about `n` steps cover `max`. */
function niceStep(max, n = 4) {
  const raw = max / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10;
  return step * mag;
}

function yTicks(maxValue) {
  const top = maxValue > 0 ? maxValue : 1;
  const step = niceStep(top);
  const ticks = [];
  for (let v = 0; v <= top + step * 0.999; v += step) ticks.push(Number(v.toPrecision(6)));
  return ticks;
}

/** The path of one series: "M x y L x y …", a new "M" after each gap. */
function pathOf(points, key, x, y) {
  let d = "";
  let pen = false;
  let drawn = 0;
  for (const p of points) {
    const v = p[key];
    if (v === null || v === undefined || Number.isNaN(v)) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)} ${y(v).toFixed(1)} `;
    pen = true;
    drawn += 1;
  }
  return { d: d.trim(), drawn };
}

/**
 * series: [{key, label}], points: [{t, [key]: number|null}] oldest first,
 * format: value -> text (axis labels and legend).
 */
export function lineChart({ id, title, series, points, format = String }) {
  const figure = h("figure", { class: "chart", id, "data-testid": id });
  figure.append(h("figcaption", {}, title));
  const values = points.flatMap((p) => series.map((sr) => p[sr.key])).filter(Number.isFinite);
  if (points.length === 0) {
    figure.append(h("p", { class: "empty" }, "No samples yet: the kernel samples every few seconds."));
    return figure;
  }
  let t0 = points[0].t;
  let t1 = points[points.length - 1].t;
  if (t1 - t0 < 1) {
    t0 -= 30;
    t1 += 1;
  }
  const ticks = yTicks(values.length ? Math.max(...values) : 0);
  const yMax = ticks[ticks.length - 1];
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": title,
    "data-samples": points.length,
  });
  for (const v of ticks) {
    svg.append(s("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    svg.append(s("text", { class: "tick", x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  let previous = "";
  for (let i = 0; i <= 4; i += 1) {
    const t = t0 + ((t1 - t0) * i) / 4;
    const label = clock(t);
    if (label === previous) continue; // a short span: the same second twice
    previous = label;
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    svg.append(s("text", { class: "tick", x: x(t), y: H - 6, "text-anchor": anchor }, label));
  }
  const legend = h("ul", { class: "legend" });
  series.forEach((sr, i) => {
    const { d, drawn } = pathOf(points, sr.key, x, y);
    if (d) {
      svg.append(s("path", { class: `line s${i}`, d, "data-series": sr.key, "data-points": drawn }));
    }
    const last = [...points].reverse().find((p) => Number.isFinite(p[sr.key]));
    if (last) svg.append(s("circle", { class: `dot s${i}`, cx: x(last.t), cy: y(last[sr.key]), r: 2.5 }));
    legend.append(
      h(
        "li",
        {},
        h("span", { class: `swatch s${i}` }),
        `${sr.label} `,
        h("b", {}, last ? format(last[sr.key]) : "–"),
      ),
    );
  });
  figure.append(svg, legend);
  return figure;
}
