// The browsing views: memories (GET /v1/memories, POST /v1/memories/search),
// files (GET /v1/files and a file's content), the audit log (GET /v1/audit, admins
// only) and alerts (GET /v1/alerts). Same view shape as live.js.

import { clipped, fill, h, num, showError, stamp } from "./dom.js";

const MAX_SHOWN_BYTES = 256 * 1024; // a file's text shown in the page, at most

function grid(id, columns) {
  const tbody = h("tbody", { id: `${id}-rows` });
  const el = h(
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
    tbody,
  );
  return { el, tbody };
}

function cell(text, max = 160, cls = null) {
  const t = String(text ?? "");
  return h("td", { title: t.length > max ? t : null, class: cls }, clipped(t, max));
}

// -- memory -------------------------------------------------------------------------

export function memoryView(ctx) {
  const query = h("input", {
    type: "search",
    id: "mem-query",
    placeholder: "search memories (empty: newest first)",
  });
  const error = h("p", { class: "error", id: "mem-error", role: "alert", hidden: true });
  const note = h("p", { class: "note", id: "mem-note" });
  const list = grid("mem-table", ["id", "scope", "pid", "tags", "text", "score", "updated"]);
  const form = h(
    "form",
    { class: "toolbar", id: "mem-form" },
    query,
    h("button", { type: "submit", id: "mem-search" }, "Search"),
  );
  const el = h("section", { class: "view", id: "view-memory" }, form, error, note, list.el);
  async function load() {
    try {
      const q = query.value.trim();
      const got = q
        ? await ctx.api().post("/v1/memories/search", { query: q, k: 50 })
        : await ctx.api().get("/v1/memories", { limit: 200 });
      showError(error, null);
      const rows = got.data || [];
      note.textContent = q ? `${rows.length} best matches for “${q}”` : `${rows.length} newest memories`;
      fill(
        list.tbody,
        rows.map((m) =>
          h(
            "tr",
            { "data-memory": m.id },
            h("td", { class: "num" }, m.id),
            h("td", {}, m.scope),
            h("td", { class: "num" }, m.pid ?? "–"),
            cell((m.tags || []).join(", "), 60),
            cell(m.text, 240, "text"),
            h("td", { class: "num" }, m.score === undefined ? "–" : num(m.score, 3)),
            h("td", {}, stamp(m.updated_at)),
          ),
        ),
      );
    } catch (err) {
      if (err.status === 401) throw err;
      fill(list.tbody);
      showError(error, err);
    }
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load().catch(ctx.fail);
  });
  return { name: "memory", title: "Memory", auto: false, el, load, show: () => {} };
}

// -- files --------------------------------------------------------------------------

function textOf(bytesIn) {
  const shown = bytesIn.subarray(0, MAX_SHOWN_BYTES);
  if (shown.includes(0)) return null; // binary
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(shown);
  } catch {
    return null;
  }
}

export function filesView(ctx) {
  const prefix = h("input", { type: "search", id: "file-prefix", placeholder: "path prefix, e.g. notes/" });
  const error = h("p", { class: "error", id: "file-error", role: "alert", hidden: true });
  const list = grid("file-table", ["path", "size", "version", "updated"]);
  const title = h("h3", { id: "file-title" }, "Pick a file to read it.");
  const content = h("pre", { id: "file-content" });
  const form = h(
    "form",
    { class: "toolbar", id: "file-form" },
    prefix,
    h("button", { type: "submit", id: "file-list" }, "List"),
  );
  const el = h(
    "section",
    { class: "view", id: "view-files" },
    form,
    error,
    h("div", { class: "split" }, h("div", {}, list.el), h("div", { class: "reader" }, title, content)),
  );

  async function open(file) {
    try {
      const data = await ctx.api().fileBytes(file.path);
      const text = textOf(data);
      title.textContent = `${file.path} · version ${file.version} · ${num(data.length, 0)} bytes`;
      if (text === null) content.textContent = "(binary content: not shown)";
      else
        content.textContent =
          data.length > MAX_SHOWN_BYTES ? `${text}\n… (first ${MAX_SHOWN_BYTES} bytes shown)` : text;
      showError(error, null);
    } catch (err) {
      if (err.status === 401) throw err;
      showError(error, { message: `${file.path}: ${err.message}` });
    }
  }

  async function load() {
    try {
      const got = await ctx.api().get("/v1/files", { prefix: prefix.value.trim() });
      showError(error, null);
      const rows = (got.data || []).map((f) =>
        h(
          "tr",
          { "data-path": f.path },
          h(
            "td",
            {},
            h(
              "button",
              {
                type: "button",
                class: "link file-open",
                "data-path": f.path,
                onclick: () => open(f).catch(ctx.fail),
              },
              f.path,
            ),
          ),
          h("td", { class: "num" }, num(f.size, 0)),
          h("td", { class: "num" }, f.version),
          h("td", {}, stamp(f.updated_at)),
        ),
      );
      fill(
        list.tbody,
        rows.length ? rows : h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No files.")),
      );
    } catch (err) {
      if (err.status === 401) throw err;
      fill(list.tbody);
      showError(error, err);
    }
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load().catch(ctx.fail);
  });
  return { name: "files", title: "Files", auto: false, el, load, show: () => {} };
}

// -- audit log ----------------------------------------------------------------------

export function auditView(ctx) {
  const outcome = h(
    "select",
    { id: "audit-outcome", "aria-label": "outcome" },
    ["", "allowed", "denied", "failed"].map((o) => h("option", { value: o }, o || "any outcome")),
  );
  const actor = h("input", { type: "search", id: "audit-actor", placeholder: "actor" });
  const error = h("p", { class: "error", id: "audit-error", role: "alert", hidden: true });
  const list = grid("audit-table", [
    "seq",
    "time",
    "actor",
    "role",
    "pid",
    "action",
    "target",
    "outcome",
    "reason",
  ]);
  const el = h(
    "section",
    { class: "view", id: "view-audit" },
    h("div", { class: "toolbar" }, outcome, actor),
    error,
    list.el,
  );
  async function load() {
    try {
      const got = await ctx
        .api()
        .get("/v1/audit", { limit: 200, outcome: outcome.value, actor: actor.value.trim() });
      showError(error, null);
      fill(
        list.tbody,
        (got.data || []).map((e) =>
          h(
            "tr",
            { "data-seq": e.seq, class: `outcome-${e.outcome}` },
            h("td", { class: "num" }, e.seq),
            h("td", {}, stamp(e.ts)),
            h("td", {}, e.actor),
            h("td", {}, e.role),
            h("td", { class: "num" }, e.pid ?? "–"),
            h("td", {}, e.action),
            cell(JSON.stringify(e.target ?? {}), 80, "mono"),
            h("td", {}, e.outcome),
            cell(e.reason, 80),
          ),
        ),
      );
    } catch (err) {
      if (err.status === 401) throw err;
      fill(list.tbody);
      showError(error, err); // 403 for non-admins: the kernel's message says so
    }
  }
  outcome.addEventListener("change", () => load().catch(ctx.fail));
  actor.addEventListener("change", () => load().catch(ctx.fail));
  return { name: "audit", title: "Audit log", auto: true, el, load, show: () => {} };
}

// -- alerts -------------------------------------------------------------------------

export function alertsView(ctx) {
  const error = h("p", { class: "error", id: "alert-error", role: "alert", hidden: true });
  const note = h("p", { class: "note", id: "alert-note" });
  const list = grid("alert-table", [
    "time",
    "pid",
    "owner",
    "kind",
    "message",
    "value",
    "threshold",
    "action",
    "cleared",
    "",
  ]);
  const el = h("section", { class: "view", id: "view-alerts" }, error, note, list.el);
  async function clear(id) {
    try {
      await ctx.api().post(`/v1/alerts/${id}/clear`, {});
      showError(error, null);
    } catch (err) {
      showError(error, { message: `clear alert ${id}: ${err.message}` }); // 403: admins only
    }
    await ctx.refresh();
  }
  async function load() {
    try {
      const got = await ctx.api().get("/v1/alerts");
      showError(error, null);
      const rows = [...(got.data || [])].sort(
        (a, b) => !!a.cleared_at - !!b.cleared_at || b.created_at - a.created_at,
      );
      note.textContent = `${rows.filter((a) => !a.cleared_at).length} open, ${rows.length} in all`;
      fill(
        list.tbody,
        rows.length ? null : h("tr", {}, h("td", { colspan: 10, class: "empty" }, "No alerts.")),
        rows.map((a) =>
          h(
            "tr",
            { "data-alert": a.id, class: a.cleared_at ? "cleared" : "open" },
            h("td", {}, stamp(a.created_at)),
            h("td", { class: "num" }, a.pid ?? "–"),
            h("td", {}, a.owner ?? "–"),
            h("td", {}, a.kind),
            cell(a.message, 200),
            h("td", { class: "num" }, num(a.value, 2)),
            h("td", { class: "num" }, num(a.threshold, 2)),
            h("td", {}, a.action ?? "–"),
            h("td", {}, a.cleared_at ? stamp(a.cleared_at) : "open"),
            h(
              "td",
              {},
              a.cleared_at
                ? null
                : h(
                    "button",
                    { type: "button", class: "clear-alert", "data-alert": a.id, onclick: () => clear(a.id) },
                    "Clear",
                  ),
            ),
          ),
        ),
      );
    } catch (err) {
      if (err.status === 401) throw err;
      fill(list.tbody);
      note.textContent = "";
      if (err.status === 404)
        note.textContent = "This kernel does not report alerts (GET /v1/alerts is not there).";
      else showError(error, err);
    }
  }
  return { name: "alerts", title: "Alerts", auto: true, el, load, show: () => {} };
}
