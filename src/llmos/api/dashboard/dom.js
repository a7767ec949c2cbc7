// DOM helpers. Every piece of API data reaches the page as a text node or an
// attribute value set through the DOM: nothing is ever parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched

function build(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** h("td", {class: "num"}, "12", child, ...): an HTML element. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** s("path", {d: "M0 0"}): an SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  return build(node, {}, children);
}

export function showError(node, err) {
  if (!err) {
    node.hidden = true;
    node.textContent = "";
    return;
  }
  node.textContent = err.message || String(err);
  node.hidden = false;
}

// -- formatting ---------------------------------------------------------------------

export function num(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return Number(x).toLocaleString(undefined, {
    minimumFractionDigits: 0,
    maximumFractionDigits: digits,
  });
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${num(v, i === 0 ? 0 : 1)} ${units[i]}`;
}

export function secs(x) {
  if (x === null || x === undefined) return "–";
  if (x < 1) return `${num(x * 1000, 0)} ms`;
  return `${num(x, 2)} s`;
}

export function duration(x) {
  const t = Math.max(0, Math.floor(x || 0));
  const d = Math.floor(t / 86400);
  const hh = Math.floor((t % 86400) / 3600);
  const mm = Math.floor((t % 3600) / 60);
  const ss = t % 60;
  const pad = (v) => String(v).padStart(2, "0");
  if (d) return `${d}d ${pad(hh)}h`;
  if (hh) return `${hh}h ${pad(mm)}m`;
  return `${mm}m ${pad(ss)}s`;
}

export function clock(epoch) {
  if (!epoch) return "–";
  return new Date(epoch * 1000).toLocaleTimeString(undefined, { hour12: false });
}

export function stamp(epoch) {
  if (!epoch) return "–";
  const d = new Date(epoch * 1000);
  return `${d.toLocaleDateString()} ${d.toLocaleTimeString(undefined, { hour12: false })}`;
}

/** Clip long text for a table cell; the whole of it goes in the cell's title. */
export function clipped(text, max = 160) {
  const t = String(text ?? "");
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}
