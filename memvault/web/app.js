// The memvault web UI: a window onto one user's memory through the REST API.
//
// Safety rule for this file: stored content (turns, memories, search hits, context text) only
// ever reaches the page as text, through `el`, `append` and `textContent`. No `innerHTML`,
// no URLs or event handlers built from data. The page's Content-Security-Policy backs this up.
//
// The API key lives in sessionStorage (this tab only) and leaves the page only as the
// Authorization header of same-origin requests: never in a URL, never logged.

const KEY_STORAGE = "memvault.key";
const USER_STORAGE = "memvault.user";
const PAGE_SIZE = { users: 50, sessions: 50, turns: 100, memories: 50 };
// milliseconds of no typing in the user id field before the user list follows it
const USER_FILTER_DELAY = 250;

const state = {
  key: null,
  userId: null,
  sessionId: null,
  cursors: { users: null, sessions: null, turns: null, memories: null },
  lastSearch: null,
};

// -- DOM helpers ----------------------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);

/** An element with attributes and children; string children become text nodes, never markup. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === "function") node.addEventListener(name, value);
    else if (value === true) node.setAttribute(name, "");
    else if (value !== false && value != null) node.setAttribute(name, String(value));
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

function show(node, visible = true) {
  node.hidden = !visible;
}

function timeElement(iso) {
  if (!iso) return null;
  return el("time", { datetime: iso }, new Date(iso).toLocaleString());
}

/** A list's only line: an empty state, or (with `loading`) a line `run` removes at the end. */
function placeholder(list, text, { loading = false } = {}) {
  list.replaceChildren(el("li", { class: loading ? "placeholder loading" : "placeholder" }, text));
}

// -- the API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `the server answered ${status}`);
    this.status = status;
    this.field = error?.details?.field ?? null;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  const init = { method, headers, cache: "no-store" }; // user content stays out of the cache
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const payload = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, payload?.error);
  return payload;
}

function userPath(...segments) {
  return `/v1/users/${[state.userId, ...segments].map(encodeURIComponent).join("/")}`;
}

function query(parameters) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) {
    if (value != null && value !== "") search.append(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// -- errors and loading ---------------------------------------------------------------------

/** The first error line of a section: where its API errors are shown, in the API's words. */
function errorLine(section) {
  return $(":scope > .error, :scope > div:not([hidden]) > .error", section);
}

function clearError(section) {
  const line = errorLine(section);
  line.textContent = "";
  show(line, false);
  for (const field of section.querySelectorAll("[aria-invalid]")) {
    field.removeAttribute("aria-invalid");
  }
}

/** The API's message as it is (it names the field); the named field of `form` is marked. */
function showError(section, error, form) {
  const line = errorLine(section);
  line.textContent =
    error instanceof ApiError ? error.message : "The server could not be reached.";
  show(line);
  const field = error instanceof ApiError && error.field && form?.querySelector(
    `[name="${CSS.escape(error.field)}"]`,
  );
  if (field) {
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }
}

/** Run one API task for a section: errors shown there, the busy flag set meanwhile, loading
 * lines cleared after. A key that stops working (revoked, its user deleted) signs the page
 * out with the API's words. */
async function run(section, task, form = null) {
  clearError(section);
  section.setAttribute("aria-busy", "true");
  try {
    await task();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && section.id !== "sign-in") {
      signOut(error);
    } else {
      showError(section, error, form);
    }
  } finally {
    section.removeAttribute("aria-busy");
    for (const line of section.querySelectorAll(".placeholder.loading")) line.remove();
  }
}

// -- signing in -----------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  let who;
  try {
    who = await api("GET", "/v1/whoami");
  } catch (error) {
    state.key = null;
    sessionStorage.removeItem(KEY_STORAGE);
    throw error;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("#api-key").value = "";
  show($("#sign-in"), false);
  show($("#identity"));
  $("#who").textContent =
    who.scope === "admin" ? "admin key" : `${who.scope} key for ${who.user_id}`;
  if (who.scope === "admin") {
    show($("#user-picker"));
    $("#user-browser").open = true;
    const remembered = sessionStorage.getItem(USER_STORAGE);
    if (remembered) await run($("#user-picker"), () => chooseUser(remembered));
    else $("#user-id").focus();
    await loadUsers();
  } else {
    openUser(who.user_id);
  }
}

function signOut(error) {
  sessionStorage.removeItem(KEY_STORAGE);
  sessionStorage.removeItem(USER_STORAGE);
  Object.assign(state, { key: null, userId: null, sessionId: null });
  for (const section of document.querySelectorAll(".view, #user-picker, #tabs, #identity")) {
    show(section, false);
  }
  show($("#sign-in"));
  if (error) showError($("#sign-in"), error);
  $("#api-key").focus();
}

/** An admin key names the user; the API says when there is no such user. */
async function chooseUser(userId) {
  await api("GET", `/v1/users/${encodeURIComponent(userId)}`);
  sessionStorage.setItem(USER_STORAGE, userId);
  $("#user-id").value = userId;
  $("#user-browser").open = false; // out of the way of the user's views, a click to open again
  openUser(userId);
}

/** An admin's list of users, by id, narrowed to those starting with the id field's text; its
 * errors are its own, so that it does not clear the picker's ("no such user"). */
function loadUsers({ more = false } = {}) {
  return loadList("users", {
    more, section: $("#user-browser"), list: $("#user-list"), moreButton: $("#users-more"),
    path: "/v1/users", filter: { prefix: $("#user-id").value.trim() }, entry: userEntry,
    loading: "Loading users…", empty: "No users match.",
  });
}

function userEntry(user) {
  const name = typeof user.profile?.name === "string" ? user.profile.name : null;
  return el("li", {},
    el("button", {
      type: "button", class: "link", click: () => run($("#user-picker"), () => chooseUser(user.id)),
    }, user.id),
    el("span", { class: "meta" }, name ? `${name} · ` : "", "updated ",
      timeElement(user.updated_at)),
  );
}

function openUser(userId) {
  state.userId = userId;
  state.lastSearch = null;
  for (const list of document.querySelectorAll(".view .list")) list.replaceChildren();
  show($("#context-result"), false);
  show($("#tabs"));
  switchView("sessions");
}

// -- views ----------------------------------------------------------------------------------

const VIEW_LOADERS = {
  sessions: () => loadSessions(),
  search: () => $("#search-query").focus(),
  memories: () => loadMemories(),
  context: () => $("#context-query").focus(),
};

/** Show a view; unless `load` is false, it also loads (or focuses) what it starts with. */
function switchView(name, { load = true } = {}) {
  for (const button of document.querySelectorAll("#tabs button")) {
    const current = button.dataset.view === name;
    if (current) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const view of document.querySelectorAll(".view")) {
    show(view, view.id === `view-${name}`);
  }
  if (load) VIEW_LOADERS[name]();
}

// -- sessions -------------------------------------------------------------------------------

/** The first page of a list (replacing what it held) or, with `more`, the next one: `name`
 * keys the cursor and the page size; the "more" button shows while the API has a next page. */
function loadList(name, { more, section, list, moreButton, path, filter, entry, loading, empty }) {
  if (!more) {
    state.cursors[name] = null;
    placeholder(list, loading, { loading: true });
  }
  return run(section, async () => {
    const page = await api("GET", path + query({
      ...filter, limit: PAGE_SIZE[name], cursor: state.cursors[name],
    }));
    if (!more) list.replaceChildren();
    list.append(...page.items.map(entry));
    if (!list.children.length) placeholder(list, empty);
    state.cursors[name] = page.next;
    show(moreButton, page.next != null);
  });
}

function loadSessions({ more = false } = {}) {
  show($("#session-detail"), false);
  show($("#session-index"));
  return loadList("sessions", {
    more, section: $("#view-sessions"), list: $("#session-list"), moreButton: $("#sessions-more"),
    path: userPath("sessions"), entry: sessionEntry,
    loading: "Loading sessions…", empty: "No sessions yet.",
  });
}

function sessionEntry(session) {
  const title = session.title || session.id;
  const turns = `${session.turn_count} turn${session.turn_count === 1 ? "" : "s"}`;
  return el("li", {},
    el("button", { type: "button", class: "link", click: () => openSession(session) }, title),
    el("span", { class: "meta" }, `${session.kind} · ${turns} · `,
      timeElement(session.last_turn_at || session.updated_at)),
  );
}

function openSession(session) {
  state.sessionId = session.id;
  show($("#session-index"), false);
  show($("#session-detail"));
  const heading = $("#session-title");
  heading.textContent = session.title || session.id;
  $("#session-meta").textContent = session.title
    ? `${session.id} · ${session.kind}` : session.kind ?? "";
  heading.focus();
  return loadTurns();
}

function loadTurns({ more = false } = {}) {
  return loadList("turns", {
    more, section: $("#view-sessions"), list: $("#turn-list"), moreButton: $("#turns-more"),
    path: userPath("sessions", state.sessionId, "turns"), entry: turnEntry,
    loading: "Loading turns…", empty: "This session has no turns.",
  });
}

function turnEntry(turn) {
  const who = turn.speaker ? `${turn.role} · ${turn.speaker}` : turn.role;
  return el("li", { class: `turn role-${turn.role}` },
    el("div", { class: "meta" }, el("strong", {}, who), " · ", timeElement(turn.created_at)),
    el("p", { class: "content" }, turn.content),
  );
}

// -- search ---------------------------------------------------------------------------------

function searchBody(form) {
  const data = new FormData(form);
  const body = { query: data.get("query"), explain: data.get("explain") === "on" };
  const limit = data.get("limit");
  if (limit !== "") body.limit = Number(limit);
  if (data.get("types")) body.types = [data.get("types")];
  return body;
}

function search(body, form) {
  const list = $("#search-results");
  placeholder(list, "Searching…", { loading: true });
  return run($("#view-search"), async () => {
    const page = await api("POST", userPath("search"), body);
    state.lastSearch = body;
    list.replaceChildren(...page.items.map((hit) => hitEntry(hit, body.explain)));
    if (!page.items.length) placeholder(list, "Nothing found.");
  }, form);
}

/** Explain on demand: ticking the box asks the last search again, with each signal's part. */
function toggleExplain(checkbox) {
  if (state.lastSearch) search({ ...state.lastSearch, explain: checkbox.checked });
}

function hitEntry(hit, explain) {
  const where = hit.session_id
    ? el("button", { type: "button", class: "link", click: () => showSession(hit.session_id) },
      `session ${hit.session_id}`)
    : null;
  return el("li", { class: "hit" },
    el("div", { class: "meta" },
      el("strong", {}, hit.type), ` · score ${hit.score.toFixed(3)} · `,
      timeElement(hit.created_at), where ? " · " : null, where),
    el("p", { class: "content" }, hit.text),
    explain && hit.signals ? signalList(hit.signals) : null,
  );
}

function signalList(signals) {
  const entries = Object.entries(signals).flatMap(([name, value]) => [
    el("dt", {}, name), el("dd", {}, value.toFixed(3)),
  ]);
  return el("dl", { class: "signals", "aria-label": "score signals" }, ...entries);
}

/** A search hit's session: straight to its turns, without fetching the session list first. */
function showSession(sessionId) {
  switchView("sessions", { load: false });
  return openSession({ id: sessionId });
}

// -- memories -------------------------------------------------------------------------------

function memoryFilter() {
  const data = new FormData($("#memory-filter"));
  return {
    kind: data.get("kind"),
    tier: data.get("tier"),
    include_superseded: data.get("include_superseded") === "on",
  };
}

function loadMemories({ more = false } = {}) {
  return loadList("memories", {
    more, section: $("#view-memories"), list: $("#memory-list"), moreButton: $("#memories-more"),
    path: userPath("memories"), filter: memoryFilter(), entry: memoryEntry,
    loading: "Loading memories…", empty: "No memories match.",
  });
}

function memoryEntry(memory) {
  const facts = [memory.kind, memory.tier, memory.category, `importance ${memory.importance}`]
    .filter(Boolean).join(" · ");
  const item = el("li", { class: "memory", "data-id": memory.id },
    el("div", { class: "meta" }, facts, " · ", timeElement(memory.created_at)),
    el("p", { class: "content" }, memory.text),
  );
  if (memory.superseded_by) {
    item.classList.add("superseded");
    item.append(el("p", { class: "meta" }, `superseded by ${memory.superseded_by}`));
  }
  item.append(memoryActions(memory, item));
  return item;
}

function memoryActions(memory, item) {
  const actions = el("div", { class: "actions" });
  const reset = () => actions.replaceChildren(...buttons);
  const buttons = [
    memory.superseded_by ? null : el("button", {
      type: "button", click: () => actions.replaceChildren(supersedeForm(memory, reset)),
    }, "Supersede"),
    el("button", {
      type: "button", class: "danger",
      click: () => actions.replaceChildren(...deleteConfirmation(memory, item, reset)),
    }, "Delete"),
  ].filter(Boolean);
  reset();
  return actions;
}

/** The successor's text, in place; the API closes the old memory and links it to the new. */
function supersedeForm(memory, cancel) {
  const textarea = el("textarea", { name: "text", rows: 3, required: true, "aria-label": "New text" });
  textarea.value = memory.text;
  const form = el("form", { class: "form", novalidate: true },
    textarea,
    el("div", { class: "row" },
      el("button", { type: "submit" }, "Save successor"),
      el("button", { type: "button", click: cancel }, "Cancel")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run($("#view-memories"), async () => {
      await api("POST", userPath("memories", memory.id, "supersede"), { text: textarea.value });
      await loadMemories();
    }, form);
  });
  queueMicrotask(() => textarea.focus());
  return form;
}

function deleteConfirmation(memory, item, cancel) {
  const yes = el("button", {
    type: "button", class: "danger",
    click: () => run($("#view-memories"), async () => {
      await api("DELETE", userPath("memories", memory.id));
      item.remove();
      if (!$("#memory-list").children.length) placeholder($("#memory-list"), "No memories match.");
    }),
  }, "Yes, delete");
  queueMicrotask(() => yes.focus());
  return [
    el("span", { role: "status" }, "Delete this memory for good?"),
    yes,
    el("button", { type: "button", click: cancel }, "Cancel"),
  ];
}

function memoryBody(form) {
  const data = new FormData(form);
  const body = { text: data.get("text"), kind: data.get("kind"), tier: data.get("tier") };
  if (data.get("category")) body.category = data.get("category");
  if (data.get("importance") !== "") body.importance = Number(data.get("importance"));
  return body;
}

// -- context --------------------------------------------------------------------------------

function contextBody(form) {
  const data = new FormData(form);
  const body = { query: data.get("query") };
  if (data.get("token_budget") !== "") body.token_budget = Number(data.get("token_budget"));
  if (data.get("session_id")) body.session_id = data.get("session_id");
  return body;
}

function showContext(context) {
  const lines = `${context.items.length} line${context.items.length === 1 ? "" : "s"}`;
  $("#context-usage").textContent =
    `${context.tokens} of ${context.token_budget} tokens · ${lines}`;
  $("#context-text").textContent = context.text || "(nothing to add for this query)";
  const dropped = $("#context-dropped");
  dropped.replaceChildren(...context.dropped.map((item) => el("li", {},
    el("div", { class: "meta" }, `${item.source} · ${item.tokens} tokens`),
    el("p", { class: "content" }, item.text))));
  if (!context.dropped.length) placeholder(dropped, "Nothing was dropped.");
  show($("#context-result"));
}

// -- wiring ---------------------------------------------------------------------------------

/** Handle a form's submit with the script (never the browser's own submission). */
function onSubmit(selector, handler) {
  $(selector).addEventListener("submit", (event) => {
    event.preventDefault();
    handler(event.currentTarget);
  });
}

function wire() {
  onSubmit("#sign-in-form", () => {
    const key = $("#api-key").value.trim();
    run($("#sign-in"), () => signIn(key));
  });
  onSubmit("#user-form", () => {
    const userId = $("#user-id").value.trim();
    run($("#user-picker"), () => chooseUser(userId), $("#user-form"));
  });
  onSubmit("#search-form", (form) => search(searchBody(form), form));
  const explain = $("#search-form [name=explain]");
  explain.addEventListener("change", () => toggleExplain(explain));
  onSubmit("#memory-filter", () => loadMemories());
  onSubmit("#memory-form", (form) => run($("#view-memories"), async () => {
    await api("POST", userPath("memories"), memoryBody(form));
    form.reset();
    await loadMemories();
  }, form));
  onSubmit("#context-form", (form) => run($("#view-context"), async () => {
    showContext(await api("POST", userPath("context"), contextBody(form)));
  }, form));
  $("#sign-out").addEventListener("click", () => signOut());
  let userFilter = null;
  $("#user-id").addEventListener("input", () => {
    clearTimeout(userFilter);
    userFilter = setTimeout(() => loadUsers(), USER_FILTER_DELAY);
  });
  $("#users-more").addEventListener("click", () => loadUsers({ more: true }));
  $("#sessions-refresh").addEventListener("click", () => loadSessions());
  $("#sessions-more").addEventListener("click", () => loadSessions({ more: true }));
  $("#turns-more").addEventListener("click", () => loadTurns({ more: true }));
  $("#memories-more").addEventListener("click", () => loadMemories({ more: true }));
  $("#session-back").addEventListener("click", () => loadSessions());
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => switchView(button.dataset.view));
  }
}

function start() {
  wire();
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) run($("#sign-in"), () => signIn(key));
  else $("#api-key").focus();
}

start();
