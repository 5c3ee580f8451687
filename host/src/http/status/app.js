// The daz status page. It polls the host's admin API (plugins, rooms, stats), follows the
// live event stream, and posts the plugin actions. No framework and no build step: the
// host serves this file as it is. Every value from the API reaches the page through
// textContent (never innerHTML), so names and titles from a Cytube room cannot inject
// markup.
"use strict";

const TOKEN_KEY = "daz.adminToken";
const PLUGINS_EVERY_MS = 2000;
const ROOMS_EVERY_MS = 2000;
const STATS_EVERY_MS = 1000;
const FEED_RENDER_EVERY_MS = 500;
const STREAM_RETRY_MS = 3000;
const SPARK_POINTS = 60;
const FEED_LENGTH = 10;

const $ = (id) => document.getElementById(id);

const page = {
  locked: false, // waiting for the operator to enter a token
  loops: [], // stop functions of the running polls
  stream: null, // the EventSource, while open
  streamRetry: null,
  feed: [], // newest first
  feedDirty: false,
  rates: [],
  busy: new Set(), // plugin names with an action in flight
  // Per plugin, the time of the last `host.plugin.<name>.loaded` event seen on the
  // stream. A reload of unchanged bytes re-creates the instance from the library
  // already mapped, so the library's load time alone would not move.
  lastLoaded: new Map(),
  plugins: new Map(), // name -> the last plugin JSON, to re-render a row on an event
  toastTimer: null,
};

// ---------------------------------------------------------------- API and token

class Unauthorized extends Error {}

function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// Calls the admin API; resolves to the JSON body, rejects with Unauthorized on 401 and
// with an Error carrying the API's own message otherwise.
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Accept", "application/json");
  const token = storedToken();
  if (token) headers.set("Authorization", "Bearer " + token);
  const resp = await fetch(path, { ...options, headers, cache: "no-store" });
  if (resp.status === 401) throw new Unauthorized("the admin API needs a token");
  const text = await resp.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = { error: text.slice(0, 200) };
    }
  }
  if (!resp.ok) {
    const err = new Error(body && body.error ? body.error : `HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return body;
}

function askForToken() {
  if (page.locked) return;
  page.locked = true;
  const hadToken = storedToken() !== null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopAll();
  setPill($("connection"), "token needed", "warn");
  setPill($("stream-state"), "stream off", "muted");
  $("forget-token").hidden = true;
  $("token-message").textContent = hadToken
    ? "The host refused that token. Enter the admin token again."
    : "This host's admin API needs a token.";
  $("token-message").classList.toggle("bad-text", hadToken);
  $("token-input").value = "";
  const dialog = $("token-dialog");
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
}

function submitToken(event) {
  event.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token-dialog").close();
  page.locked = false;
  startAll();
}

function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
}

// ---------------------------------------------------------------- polling

// Runs `fn` now and then every `ms` after it settles, until stopped or locked.
function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    try {
      await fn();
      if (!page.locked) setPill($("connection"), "live", "ok");
    } catch (err) {
      failed(err);
    }
    if (!stopped && !page.locked) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function failed(err) {
  if (err instanceof Unauthorized) {
    askForToken();
  } else if (err instanceof TypeError) {
    setPill($("connection"), "host unreachable", "bad");
  } else {
    setPill($("connection"), "API error", "bad");
    $("connection").title = err.message;
  }
}

function startAll() {
  stopAll();
  $("forget-token").hidden = storedToken() === null;
  page.loops.push(every(PLUGINS_EVERY_MS, refreshPlugins));
  page.loops.push(every(ROOMS_EVERY_MS, refreshRooms));
  page.loops.push(every(STATS_EVERY_MS, refreshStats));
  openStream();
}

function stopAll() {
  for (const stop of page.loops) stop();
  page.loops = [];
  closeStream();
}

// ---------------------------------------------------------------- plugins

async function refreshPlugins() {
  const body = await api("/api/plugins");
  renderPlugins(body.plugins || []);
}

function pluginState(p) {
  if (!p.enabled) return { text: "disabled", tone: "muted" };
  if (p.stuck) return { text: "stuck", tone: "bad" };
  const state = p.state || "not loaded";
  const tone =
    { serving: "ok", starting: "info", quarantined: "bad", failed: "bad", stopped: "muted" }[
      state
    ] || "muted";
  return { text: state.replace(/_/g, " "), tone };
}

function renderPlugins(plugins) {
  const tbody = $("plugin-rows");
  const rows = new Map();
  for (const tr of tbody.querySelectorAll("tr[data-plugin]")) rows.set(tr.dataset.plugin, tr);
  tbody.querySelector("tr.empty")?.remove();

  let previous = null;
  for (const p of plugins) {
    page.plugins.set(p.name, p);
    let tr = rows.get(p.name);
    if (!tr) tr = pluginRow(p.name);
    rows.delete(p.name);
    updatePluginRow(tr, p);
    // Keep the API's order without rebuilding rows (a click must not land on a row
    // that was just replaced).
    const want = previous ? previous.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    previous = tr;
  }
  for (const tr of rows.values()) tr.remove();
  if (plugins.length === 0) {
    tbody.append(el("tr", { class: "empty" }, el("td", { colspan: "8" }, "No plugins configured.")));
  }

  const serving = plugins.filter((p) => p.enabled && p.state === "serving").length;
  $("plugins-serving").textContent = `${serving} / ${plugins.length}`;
  $("plugins-updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function pluginRow(name) {
  const tr = el("tr", { "data-plugin": name });
  const cell = (field, cls) => el("td", { "data-field": field, class: cls });
  tr.append(
    el(
      "td",
      { class: "plugin-name" },
      el("div", { class: "name" }, name),
      el("div", { class: "error", "data-field": "last_error" })
    ),
    el("td", {}, el("span", { class: "badge", "data-field": "state" })),
    el(
      "td",
      {},
      el("div", { "data-field": "version" }),
      el("div", { class: "muted mono small", "data-field": "sha256" })
    ),
    cell("loaded"),
    cell("events_handled", "num"),
    cell("panics", "num"),
    cell("mailbox_depth", "num")
  );
  const actions = el("td", { class: "actions" });
  for (const action of ["reload", "enable", "disable", "rollback"]) {
    const button = el(
      "button",
      { type: "button", class: "btn btn-" + action, "data-action": action },
      action
    );
    button.addEventListener("click", () => pluginAction(name, action, tr));
    actions.append(button);
  }
  tr.append(actions);
  return tr;
}

function updatePluginRow(tr, p) {
  const field = (name) => tr.querySelector(`[data-field="${name}"]`);
  const state = pluginState(p);
  const badge = field("state");
  badge.textContent = state.text;
  badge.className = "badge badge-" + state.tone;
  tr.dataset.state = state.text;
  tr.dataset.enabled = String(!!p.enabled);

  field("version").textContent = p.version || "–";
  const leaked = p.leaked_versions ? ` · ${p.leaked_versions} older mapped` : "";
  field("sha256").textContent = p.sha256 ? p.sha256.slice(0, 12) + leaked : "";
  field("sha256").title = p.sha256 || "";

  const loaded = field("loaded");
  const instanceAt = page.lastLoaded.get(p.name) || 0;
  const loadedAt = Math.max(p.loaded_at_ms || 0, instanceAt);
  if (loadedAt) {
    tr.dataset.loadedAt = String(loadedAt);
    loaded.textContent = ago(loadedAt);
    loaded.title =
      instanceAt > (p.loaded_at_ms || 0)
        ? `instance started ${new Date(instanceAt).toLocaleString()}; file loaded ${new Date(p.loaded_at_ms).toLocaleString()}`
        : `loaded ${new Date(loadedAt).toLocaleString()}`;
  } else {
    delete tr.dataset.loadedAt;
    loaded.textContent = "–";
    loaded.title = "";
  }
  field("events_handled").textContent = count(p.events_handled);
  field("panics").textContent = count(p.panics);
  field("panics").classList.toggle("bad-text", (p.panics || 0) > 0);
  field("mailbox_depth").textContent = count(p.mailbox_depth);
  field("last_error").textContent = p.last_error || "";

  const busy = page.busy.has(p.name);
  tr.classList.toggle("busy", busy);
  const canRollback = p.previous_version === undefined ? true : p.previous_version !== null;
  const allowed = {
    reload: p.enabled,
    enable: !p.enabled,
    disable: p.enabled,
    rollback: p.enabled && canRollback,
  };
  for (const button of tr.querySelectorAll("button[data-action]")) {
    button.disabled = busy || !allowed[button.dataset.action];
  }
  const rollback = tr.querySelector('button[data-action="rollback"]');
  rollback.title = p.previous_version ? `back to ${p.previous_version}` : "";
}

function pluginLoaded(name, tsMs) {
  page.lastLoaded.set(name, Math.max(tsMs, page.lastLoaded.get(name) || 0));
  const tr = document.querySelector(`tr[data-plugin="${CSS.escape(name)}"]`);
  const p = page.plugins.get(name);
  if (tr && p) updatePluginRow(tr, p);
}

async function pluginAction(name, action, tr) {
  if (page.busy.has(name)) return;
  page.busy.add(name);
  tr.classList.add("busy");
  for (const button of tr.querySelectorAll("button")) button.disabled = true;
  try {
    const body = await api(`/api/plugins/${encodeURIComponent(name)}/${action}`, {
      method: "POST",
    });
    toast(body && body.detail ? body.detail : `${action} ${name}: done`, "ok");
  } catch (err) {
    if (err instanceof Unauthorized) askForToken();
    else toast(`${action} ${name} failed: ${err.message}`, "bad");
  } finally {
    page.busy.delete(name);
  }
  if (!page.locked) {
    try {
      await refreshPlugins();
    } catch (err) {
      failed(err);
    }
  }
}

// ---------------------------------------------------------------- rooms

async function refreshRooms() {
  const body = await api("/api/rooms");
  const rooms = body.rooms || [];
  const details = await Promise.all(
    rooms.map((r) =>
      api("/api/rooms/" + encodeURIComponent(r.room)).catch((err) => {
        if (err instanceof Unauthorized) throw err;
        return null;
      })
    )
  );
  renderRooms(rooms, details);
}

const CONNECTED = new Set(["logged_in", "joined"]);

function renderRooms(rooms, details) {
  const list = $("room-list");
  if (rooms.length === 0) {
    list.replaceChildren(el("p", { class: "empty" }, "No rooms configured."));
  } else {
    list.replaceChildren(...rooms.map((r, i) => roomCard(r, details[i])));
  }
  const connected = rooms.filter((r) => CONNECTED.has(r.state)).length;
  $("rooms-connected").textContent = `${connected} / ${rooms.length}`;
}

function roomCard(summary, detail) {
  const st = (detail && detail.state) || {};
  const connState = summary.state || (detail && detail.status && detail.status.state) || "unknown";
  const tone = CONNECTED.has(connState)
    ? "ok"
    : ["failed"].includes(connState)
      ? "bad"
      : ["disconnected", "connecting", "connected"].includes(connState)
        ? "warn"
        : "muted";

  const head = el(
    "div",
    { class: "room-head" },
    el(
      "div",
      {},
      el("h3", {}, summary.room),
      el("div", { class: "muted small" }, `${summary.channel} · ${summary.site}`)
    ),
    el("span", { class: "badge badge-" + tone, "data-field": "room-state" }, connState.replace(/_/g, " "))
  );

  const me = summary.me
    ? `${summary.me} · rank ${formatRank(summary.rank)}`
    : "not logged in";
  const facts = el(
    "div",
    { class: "room-facts small" },
    el("span", {}, el("span", { class: "muted" }, "bot "), me),
    el("span", {}, el("span", { class: "muted" }, "playlist "), `${count(summary.playlist)} items`),
    el("span", {}, el("span", { class: "muted" }, "online "), count(summary.usercount))
  );

  const card = el("article", { class: "room", "data-room": summary.room }, head, facts);
  card.append(nowPlaying(st.now_playing));

  const users = Array.isArray(st.users) ? st.users : [];
  const userList = el("ul", { class: "users" });
  for (const u of users) {
    const rank = Number(u.rank) || 0;
    const afk = u.meta && u.meta.afk;
    const cls = ["user", rank >= 2 ? "user-mod" : "", afk ? "user-afk" : ""].join(" ").trim();
    userList.append(
      el("li", { class: cls, title: `rank ${formatRank(rank)}${afk ? " · AFK" : ""}` }, u.name)
    );
  }
  card.append(
    el(
      "div",
      { class: "users-block" },
      el("div", { class: "section-label" }, `Users (${users.length})`),
      users.length ? userList : el("p", { class: "muted small" }, "Nobody listed.")
    )
  );

  const err = summary.last_error;
  if (err) {
    const text = typeof err === "string" ? err : err.message || JSON.stringify(err);
    card.append(el("p", { class: "error small" }, text));
  }
  return card;
}

function nowPlaying(np) {
  const block = el("div", { class: "now-playing" });
  block.append(el("div", { class: "section-label" }, "Now playing"));
  if (!np || !np.media) {
    block.append(el("p", { class: "muted small", "data-field": "media-title" }, "Nothing playing."));
    return block;
  }
  const m = np.media;
  block.append(
    el("div", { class: "media-title", "data-field": "media-title" }, m.title || m.id || "untitled"),
    el("div", { class: "muted small mono" }, `${m.type || "?"}:${m.id || "?"}`)
  );
  const seconds = Number(m.seconds) || 0;
  const at = Math.max(0, Number(np.current_time) || 0);
  const line = el("div", { class: "media-progress small" });
  if (seconds > 0) {
    line.append(
      el("progress", { max: String(seconds), value: String(Math.min(at, seconds)) }),
      el("span", { class: "mono" }, `${clock(at)} / ${clock(seconds)}`)
    );
  } else {
    line.append(el("span", { class: "badge badge-info" }, "live"), el("span", { class: "mono" }, clock(at)));
  }
  if (np.paused) line.append(el("span", { class: "badge badge-warn" }, "paused"));
  block.append(line);
  return block;
}

// ---------------------------------------------------------------- stats and events

async function refreshStats() {
  const s = await api("/api/stats");
  const rate = Number(s.events_per_second) || 0;
  $("rate").textContent = formatRate(rate);
  $("events-total").textContent = count(s.events_total);
  $("uptime").textContent = duration(s.uptime_ms);
  page.rates.push(rate);
  if (page.rates.length > SPARK_POINTS) page.rates.shift();
  drawSpark();
}

function drawSpark() {
  const w = 120;
  const h = 32;
  const n = page.rates.length;
  if (n < 2) return;
  const max = Math.max(1, ...page.rates);
  // Until the window fills up, the samples there are span the whole width.
  const step = w / (n - 1);
  const pts = page.rates.map(
    (r, i) => `${(i * step).toFixed(1)},${(h - 2 - (r / max) * (h - 4)).toFixed(1)}`
  );
  $("spark-line").setAttribute("points", pts.join(" "));
  $("spark-area").setAttribute("points", `0,${h} ${pts.join(" ")} ${w},${h}`);
}

function openStream() {
  closeStream();
  const token = storedToken();
  const url = "/api/events/stream" + (token ? "?token=" + encodeURIComponent(token) : "");
  const stream = new EventSource(url);
  page.stream = stream;
  setPill($("stream-state"), "connecting…", "muted");
  stream.onopen = () => setPill($("stream-state"), "streaming", "ok");
  stream.onmessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    const loaded = /^host\.plugin\.([^.]+)\.loaded$/.exec(event.subject || "");
    if (loaded && event.ts_ms) pluginLoaded(loaded[1], event.ts_ms);
    page.feed.unshift(event);
    if (page.feed.length > FEED_LENGTH) page.feed.length = FEED_LENGTH;
    page.feedDirty = true;
  };
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) {
      // Refused (a 401 shows up in the polls too) or the host went away: try again
      // later unless the page is waiting for a token.
      setPill($("stream-state"), "stream closed", "warn");
      closeStream();
      if (!page.locked) page.streamRetry = setTimeout(openStream, STREAM_RETRY_MS);
    } else {
      setPill($("stream-state"), "reconnecting…", "warn");
    }
  };
}

function closeStream() {
  clearTimeout(page.streamRetry);
  page.streamRetry = null;
  if (page.stream) {
    page.stream.close();
    page.stream = null;
  }
}

function renderFeed() {
  if (!page.feedDirty) return;
  page.feedDirty = false;
  const items = page.feed.map((e) => {
    const subject = String(e.subject || "");
    const kind = subject.startsWith("cytube.in.")
      ? "in"
      : subject.startsWith("cytube.out.")
        ? "out"
        : subject.startsWith("host.")
          ? "host"
          : "other";
    return el(
      "li",
      { class: "event event-" + kind },
      el("span", { class: "event-time mono muted" }, e.ts_ms ? new Date(e.ts_ms).toLocaleTimeString() : ""),
      el("span", { class: "event-subject mono" }, subject),
      el("span", { class: "event-source muted" }, e.source || "")
    );
  });
  $("event-feed").replaceChildren(...items);
  $("event-feed-empty").hidden = items.length > 0;
}

// ---------------------------------------------------------------- little helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== undefined && child !== null) node.append(child);
  }
  return node;
}

function setPill(node, text, tone) {
  node.textContent = text;
  node.className = "pill pill-" + tone;
  if (tone !== "bad") node.title = "";
}

function toast(text, tone) {
  const node = $("toast");
  node.textContent = text;
  node.className = "toast toast-" + tone;
  node.hidden = false;
  clearTimeout(page.toastTimer);
  page.toastTimer = setTimeout(() => (node.hidden = true), 5000);
}

const numbers = new Intl.NumberFormat();

function count(n) {
  return n === undefined || n === null ? "–" : numbers.format(n);
}

function formatRate(r) {
  return r >= 100 ? numbers.format(Math.round(r)) : r.toFixed(1);
}

function formatRank(rank) {
  const n = Number(rank);
  return Number.isFinite(n) ? String(n) : "?";
}

function clock(seconds) {
  const s = Math.floor(seconds);
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh > 0 ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

function duration(ms) {
  if (ms === undefined || ms === null) return "–";
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function ago(ms) {
  const d = Date.now() - ms;
  return d < 2000 ? "just now" : duration(d) + " ago";
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", submitToken);
  // The page shows nothing without the token: Escape does not close the prompt.
  $("token-dialog").addEventListener("cancel", (event) => event.preventDefault());
  $("forget-token").addEventListener("click", forgetToken);
  setInterval(renderFeed, FEED_RENDER_EVERY_MS);
  startAll();
});
