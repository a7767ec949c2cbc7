// The dashboard's shell: log in with a token (kept in sessionStorage, sent as
// `Authorization: Bearer`), the header, the tabs, and the refresh loop (every
// REFRESH_MS while "auto-refresh" is ticked; a 401 at any point logs out).

import { Api } from "./api.js";
import { alertsView, auditView, filesView, memoryView } from "./browse.js";
import { $, bytes, clock, duration, fill, h, num, showError } from "./dom.js";
import { chartsView, openAlerts, overviewView, processesView } from "./live.js";

const REFRESH_MS = 2000;
const TOKEN_KEY = "llmos.token";
const TAB_KEY = "llmos.tab";

let api = null;
let timer = null;
let busy = null; // the refresh in flight, if any
let current = null;

const ctx = { api: () => api, refresh: () => refresh(false), fail };
const views = [
  overviewView(ctx),
  processesView(ctx),
  chartsView(ctx),
  memoryView(ctx),
  filesView(ctx),
  auditView(ctx),
  alertsView(ctx),
];

// -- login --------------------------------------------------------------------------

function tokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!m) return null;
  // The fragment never reaches the server; drop it from the address bar and history.
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  return decodeURIComponent(m[1]);
}

async function login(token) {
  const error = $("#login-error");
  const candidate = new Api(token);
  try {
    const who = await candidate.get("/v1/auth/whoami");
    api = candidate;
    sessionStorage.setItem(TOKEN_KEY, token);
    showError(error, null);
    enter(who);
  } catch (err) {
    showError(error, err);
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin();
  }
}

function logout(message = null) {
  api = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopTimer();
  // Leave nothing of the last session's data in the page (the views keep their forms).
  for (const v of views) {
    for (const node of v.el.querySelectorAll("tbody, pre, .note, .charts")) node.replaceChildren();
    for (const node of v.el.querySelectorAll(".error")) showError(node, null);
  }
  views[0].el.replaceChildren();
  fill($("#summary"));
  fill($("#whoami"));
  showLogin();
  showError($("#login-error"), message ? { message } : null);
}

function showLogin() {
  $("#app").hidden = true;
  $("#login-view").hidden = false;
  $("#token").value = "";
  $("#token").focus();
}

function enter(who) {
  $("#login-view").hidden = true;
  $("#app").hidden = false;
  const name = who.pid ? `process ${who.pid} of ${who.owner}` : who.owner;
  fill($("#whoami"), h("b", {}, name), ` · ${who.role}`);
  select(sessionStorage.getItem(TAB_KEY) || "overview");
  startTimer();
}

// -- tabs and refresh ---------------------------------------------------------------

function select(name) {
  current = views.find((v) => v.name === name) || views[0];
  sessionStorage.setItem(TAB_KEY, current.name);
  for (const v of views) v.el.hidden = v !== current;
  for (const b of document.querySelectorAll("#tabs button")) {
    b.setAttribute("aria-selected", String(b.dataset.tab === current.name));
  }
  refresh(false);
}

function header(top) {
  const sys = top.system || {};
  const sample = top.sample || {};
  const alerts = openAlerts(top).length;
  fill(
    $("#summary"),
    h("span", {}, "policy ", h("b", { id: "hdr-policy" }, top.policy)),
    h("span", {}, "up ", h("b", {}, duration(top.uptime_s))),
    h("span", {}, "CPU ", h("b", {}, `${num(sys.cpu_percent, 0)} %`)),
    h("span", {}, "RSS ", h("b", {}, bytes(sys.rss_bytes))),
    h("span", {}, h("b", {}, num(sample.tokens_per_s, 1)), " tok/s"),
    h(
      "span",
      {},
      h("b", {}, num(top.waiting, 0)),
      " waiting · ",
      h("b", {}, num(top.running, 0)),
      " running",
    ),
    alerts ? h("span", { class: "alert-badge" }, `${alerts} alert${alerts > 1 ? "s" : ""}`) : null,
  );
  $("#updated").textContent = `updated ${clock(top.time)}`;
}

/**
 * Redraw from /v1/sys/top and load the current view; `auto`: a timer tick.
 * One refresh runs at a time: a tick during one is dropped, anything else (a tab
 * picked, a kill, a renice) runs again once it is over, so it sees its own effect.
 */
async function refresh(auto) {
  if (busy) {
    if (auto) return busy;
    await busy;
    return refresh(false);
  }
  if (!api) return;
  const session = api;
  const view = current;
  busy = (async () => {
    try {
      const top = await session.get("/v1/sys/top");
      if (api !== session) return; // logged out meanwhile: show nothing
      header(top);
      for (const v of views) v.show(top);
      if (!auto || view.auto) await view.load();
      showError($("#global-error"), null);
    } catch (err) {
      if (api === session) fail(err);
    } finally {
      busy = null;
    }
  })();
  return busy;
}

/** A failure outside a refresh (a form, a click): a 401 logs out, the rest is shown. */
function fail(err) {
  if (err.status === 401) logout(`Logged out: ${err.message}`);
  else showError($("#global-error"), err);
}

function startTimer() {
  stopTimer();
  if ($("#auto").checked) timer = window.setInterval(() => refresh(true), REFRESH_MS);
}

function stopTimer() {
  if (timer !== null) window.clearInterval(timer);
  timer = null;
}

// -- wiring -------------------------------------------------------------------------

function init() {
  const main = $("#views");
  const tabs = $("#tabs");
  for (const v of views) {
    v.el.hidden = true;
    main.append(v.el);
    tabs.append(
      h(
        "button",
        {
          type: "button",
          id: `tab-${v.name}`,
          "data-tab": v.name,
          role: "tab",
          onclick: () => select(v.name),
        },
        v.title,
      ),
    );
  }
  $("#login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("#token").value.trim();
    if (!token) {
      showError($("#login-error"), { message: "Enter a token." });
      return;
    }
    login(token);
  });
  $("#logout").addEventListener("click", () => logout());
  $("#auto").addEventListener("change", startTimer);
  $("#refresh").addEventListener("click", () => refresh(false));
  const saved = tokenFromFragment() || sessionStorage.getItem(TOKEN_KEY);
  if (saved) login(saved);
  else showLogin();
}

init();
