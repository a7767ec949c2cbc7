// The live views, fed by GET /v1/sys/top and /v1/sys/history: overview (devices,
// queues, open alerts), processes (kill, renice) and charts over time.
//
// A view is {name, title, auto, el, show(top), load(ctx)}: `show` redraws from
// the latest /v1/sys/top, `load` fetches what else the view needs; `auto` views
// are reloaded on every refresh tick.

import { lineChart } from "./charts.js";
import { bytes, clipped, duration, fill, h, num, secs, showError, stamp } from "./dom.js";

function table(id, columns, rows) {
  return h(
    "table",
    { class: "grid", id },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        columns.map((c) => h("th", {}, c)),
      ),
    ),
    h("tbody", {}, rows),
  );
}

function card(label, value, testid) {
  return h(
    "div",
    { class: "card", "data-testid": testid },
    h("span", { class: "label" }, label),
    h("b", {}, value),
  );
}

export function openAlerts(top) {
  return Array.isArray(top.alerts) ? top.alerts.filter((a) => !a.cleared_at) : [];
}

// -- overview -----------------------------------------------------------------------

export function overviewView() {
  const el = h("section", { class: "view", id: "view-overview" });
  return {
    name: "overview",
    title: "Overview",
    auto: true,
    el,
    load: async () => {},
    show(top) {
      const sys = top.system || {};
      const sample = top.sample || {};
      const slots = top.devices.reduce((n, d) => n + (d.slots || 0), 0);
      const alerts = openAlerts(top);
      const cards = h(
        "div",
        { class: "cards" },
        card("policy", top.policy, "policy"),
        card("uptime", duration(top.uptime_s), "uptime"),
        card("waiting", num(top.waiting, 0), "waiting"),
        card("running", `${num(top.running, 0)} / ${num(slots, 0)} slots`, "running"),
        card("tokens/s", num(sample.tokens_per_s, 1), "tokens"),
        card("kernel CPU", `${num(sys.cpu_percent, 0)} % of ${sys.cores || 1} cores`, "cpu"),
        card("kernel RSS", bytes(sys.rss_bytes), "rss"),
        card(
          "children",
          `${num(sys.children_cpu_percent, 0)} % · ${bytes(sys.children_rss_bytes)}`,
          "children",
        ),
        card("e2e p50 / p95", `${secs(sample.e2e_p50_s)} / ${secs(sample.e2e_p95_s)}`, "latency"),
        card("open alerts", num(alerts.length, 0), "alerts"),
      );
      const devices = top.devices.map((d) =>
        h(
          "tr",
          { "data-device": d.name },
          h("td", {}, d.name),
          h("td", {}, d.model),
          h("td", {}, d.kind),
          h("td", { class: `breaker ${d.breaker}` }, d.breaker),
          h("td", { class: "num" }, `${num(d.busy, 0)} / ${num(d.slots, 0)}`),
          h("td", {}, h("meter", { min: 0, max: 1, value: d.occupancy ?? (d.slots ? d.busy / d.slots : 0) })),
          h("td", { class: "num" }, num(d.tokens_per_s, 1)),
          h("td", { class: "num" }, num(d.waiting, 0)),
          h(
            "td",
            { class: "num" },
            d.kv_cache_usage_ratio === undefined ? "–" : `${num(100 * d.kv_cache_usage_ratio, 0)} %`,
          ),
        ),
      );
      const queues = Object.entries(top.queues || {}).map(([model, n]) =>
        h("tr", { "data-queue": model }, h("td", {}, model), h("td", { class: "num" }, num(n, 0))),
      );
      const alertRows = alerts.map((a) =>
        h(
          "tr",
          {},
          h("td", {}, stamp(a.created_at)),
          h("td", {}, a.pid ?? "–"),
          h("td", {}, a.kind),
          h("td", {}, a.message),
        ),
      );
      fill(
        el,
        cards,
        h("h2", {}, "Devices"),
        table(
          "device-table",
          ["device", "model", "kind", "breaker", "busy", "occupancy", "tokens/s", "waiting", "KV cache"],
          devices,
        ),
        h("h2", {}, "Run queues"),
        table("queue-table", ["model", "waiting"], queues),
        alertRows.length
          ? [
              h("h2", {}, "Open alerts"),
              table("overview-alerts", ["time", "pid", "kind", "message"], alertRows),
            ]
          : null,
      );
    },
  };
}

// -- processes ----------------------------------------------------------------------

const PROC_COLUMNS = [
  "pid",
  "name",
  "owner",
  "state",
  "priority",
  "tokens/s",
  "tokens in / out",
  "requests",
  "preemptions",
  "started",
  "",
];

export function processesView(ctx) {
  const error = h("p", { class: "error", id: "proc-error", role: "alert", hidden: true });
  const hideDone = h("input", { type: "checkbox", id: "hide-finished" });
  const tbody = h("tbody", { id: "proc-rows" });
  const empty = h("p", { class: "empty", id: "proc-empty", hidden: true }, "No processes.");
  const el = h(
    "section",
    { class: "view", id: "view-processes" },
    h("div", { class: "toolbar" }, h("label", {}, hideDone, " hide finished")),
    error,
    h(
      "table",
      { class: "grid", id: "proc-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          PROC_COLUMNS.map((c) => h("th", {}, c)),
        ),
      ),
      tbody,
    ),
    empty,
  );
  const rows = new Map(); // pid -> {tr, cells, input, kill}
  let latest = [];

  async function kill(pid) {
    const row = rows.get(pid);
    const name = row ? row.name : "";
    if (!window.confirm(`Kill process ${pid} (${name})? Its running requests end now.`)) return;
    try {
      await ctx.api().del(`/v1/processes/${pid}`);
      showError(error, null);
    } catch (err) {
      showError(error, { message: `kill ${pid}: ${err.message}` });
    }
    await ctx.refresh();
  }

  async function renice(pid, input) {
    const priority = Number.parseInt(input.value, 10);
    try {
      if (!Number.isInteger(priority)) throw new Error("the priority must be a whole number (0..39)");
      await ctx.api().post(`/v1/processes/${pid}/renice`, { priority });
      delete input.dataset.dirty;
      showError(error, null);
    } catch (err) {
      showError(error, { message: `renice ${pid}: ${err.message}` });
    }
    await ctx.refresh();
  }

  function makeRow(p) {
    const cells = PROC_COLUMNS.map(() => h("td"));
    const input = h("input", {
      type: "number",
      class: "renice",
      min: 0,
      max: 39,
      "data-pid": p.pid,
      "aria-label": `priority of ${p.pid}`,
    });
    // Typed-in values survive refreshes until applied (a refresh skips a dirty field).
    for (const event of ["input", "change"]) input.addEventListener(event, () => (input.dataset.dirty = "1"));
    input.addEventListener("keydown", (e) => e.key === "Enter" && renice(p.pid, input));
    const apply = h(
      "button",
      { type: "button", class: "renice-apply", "data-pid": p.pid, onclick: () => renice(p.pid, input) },
      "Set",
    );
    const killBtn = h(
      "button",
      { type: "button", class: "kill danger", "data-pid": p.pid, onclick: () => kill(p.pid) },
      "Kill",
    );
    cells[4].append(input, apply);
    cells[10].append(killBtn);
    const tr = h("tr", { "data-pid": p.pid }, cells);
    return { tr, cells, input, apply, kill: killBtn, name: p.name };
  }

  function update(row, p) {
    const c = row.cells;
    row.name = p.name;
    row.tr.dataset.state = p.state;
    c[0].textContent = p.pid;
    c[1].textContent = clipped(p.name, 40);
    c[1].title = p.command || p.name;
    c[2].textContent = p.owner;
    fill(c[3], h("span", { class: `state ${p.state}` }, p.state));
    c[3].className = "state-cell";
    c[5].textContent = num(p.tokens_per_s, 1);
    c[6].textContent = `${num(p.tokens_in, 0)} / ${num(p.tokens_out, 0)}`;
    c[7].textContent = num(p.requests, 0);
    c[8].textContent = num(p.preemptions, 0);
    c[9].textContent = stamp(p.created_at);
    for (const i of [0, 5, 6, 7, 8]) c[i].className = "num";
    const alive = !["exited", "killed"].includes(p.state);
    if (document.activeElement !== row.input && !row.input.dataset.dirty) row.input.value = p.priority;
    row.input.disabled = !alive;
    row.apply.disabled = !alive;
    row.kill.hidden = !alive;
  }

  function show(top) {
    latest = top.processes || [];
    const seen = new Set();
    const live = (p) => !["exited", "killed"].includes(p.state);
    const ordered = [...latest]
      .filter((p) => live(p) || !hideDone.checked)
      .sort((a, b) => live(b) - live(a) || (live(a) ? a.pid - b.pid : b.pid - a.pid));
    for (const p of ordered) {
      seen.add(p.pid);
      if (!rows.has(p.pid)) rows.set(p.pid, makeRow(p));
      update(rows.get(p.pid), p);
    }
    for (const [pid, row] of rows) {
      if (!seen.has(pid)) {
        row.tr.remove();
        rows.delete(pid);
      }
    }
    // Re-append only when the order changed: moving a row would blur its input.
    const want = ordered.map((p) => rows.get(p.pid).tr);
    const have = [...tbody.children];
    if (want.length !== have.length || want.some((tr, i) => tr !== have[i])) tbody.replaceChildren(...want);
    empty.hidden = ordered.length > 0;
  }

  hideDone.addEventListener("change", () => show({ processes: latest }));
  return { name: "processes", title: "Processes", auto: true, el, show, load: async () => {} };
}

// -- charts -------------------------------------------------------------------------

const CHARTS = [
  {
    id: "chart-queue",
    title: "Queue depth and running requests",
    series: [
      { key: "waiting", label: "waiting" },
      { key: "running", label: "running" },
      { key: "slots", label: "slots" },
    ],
    format: (v) => num(v, 2),
  },
  {
    id: "chart-latency",
    title: "Latency of finished requests",
    series: [
      { key: "e2e_p95_s", label: "e2e p95" },
      { key: "e2e_p50_s", label: "e2e p50" },
      { key: "ttft_p50_s", label: "TTFT p50" },
    ],
    format: secs,
  },
  {
    id: "chart-tokens",
    title: "Tokens per second (all devices)",
    series: [{ key: "tokens_per_s", label: "tokens/s" }],
    format: (v) => num(v, 2),
  },
  {
    id: "chart-cpu",
    title: "CPU (100 % = one core)",
    series: [
      { key: "cpu_percent", label: "kernel" },
      { key: "children_cpu_percent", label: "children" },
    ],
    format: (v) => `${num(v, 0)} %`,
  },
];

export function chartsView(ctx) {
  const range = h(
    "select",
    { id: "chart-window", "aria-label": "time window" },
    [300, 600, 1800, 3600].map((sec) =>
      h("option", { value: sec, selected: sec === 600 }, `last ${sec / 60} min`),
    ),
  );
  const error = h("p", { class: "error", id: "chart-error", role: "alert", hidden: true });
  const grid = h("div", { class: "charts", id: "charts" });
  const el = h(
    "section",
    { class: "view", id: "view-charts" },
    h("div", { class: "toolbar" }, range),
    error,
    grid,
  );
  async function load() {
    try {
      const history = await ctx.api().get("/v1/sys/history", { seconds: range.value });
      showError(error, null);
      const points = history.data || [];
      fill(
        grid,
        CHARTS.map((c) => lineChart({ ...c, points })),
      );
    } catch (err) {
      if (err.status === 401) throw err;
      showError(error, err);
    }
  }
  range.addEventListener("change", () => load().catch(ctx.fail));
  return { name: "charts", title: "Charts", auto: true, el, load, show: () => {} };
}
