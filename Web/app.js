// The reference chat page: threads, history, and replies streamed from POST /query_stream, with Stop, Retry and
// resume (after a dropped connection or a reload) from the last SSE id. No framework, no build step.
import { Api, ApiError } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const SELECTED_KEY = "agent-service.thread";   // sessionStorage: the open thread
const RUNNING_KEY = "agent-service.running";   // sessionStorage: {thread, last_id} while a reply runs

const $ = (id) => document.getElementById(id);
const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || undefined;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const utf8Length = (text) => new TextEncoder().encode(text).length;

let api;
let selected = sessionStorage.getItem(SELECTED_KEY);
let running = null;   // the reply being streamed: {thread, question, text, lastID, turnID, view, controller}

// MARK: Start

async function boot() {
  const config = await fetch("/config.json").then((response) => response.json());
  api = new Api(config);
  api.onSignedOut = showSignIn;
  wireEvents();
  if (api.signedIn) await showApp(); else showSignIn();
}

function showSignIn(message = "") {
  abortRunning();
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("email").focus();
}

async function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = api.auth !== "supabase";
  const saved = readRunning();
  if (saved) selected = saved.thread;
  await refreshThreads();
  if (selected) await openThread(selected); else newThread();
}

function wireEvents() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    try {
      await api.signIn($("email").value, $("password").value);
      $("password").value = "";
      await showApp();
    } catch (error) {
      $("signin-error").textContent = error.message;
    }
  });
  $("sign-out").addEventListener("click", () => {
    api.signOut();
    selected = null;
    sessionStorage.removeItem(SELECTED_KEY);
    showSignIn();
  });
  $("new-thread").addEventListener("click", newThread);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("input").value.trim();
    if (!question || running) return;
    $("input").value = "";
    send(question);
  });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stop);
}

// MARK: Threads

async function refreshThreads() {
  let threads = [];
  try {
    threads = (await guarded(() => api.listThreads())).threads;
  } catch (error) {
    notice(error.message);
    return;
  }
  const list = $("threads");
  list.replaceChildren(...threads.map((thread) => {
    const item = document.createElement("li");
    item.dataset.thread = thread.thread_id;
    const open = document.createElement("button");
    open.type = "button";
    open.className = "thread-title";
    open.textContent = thread.title || "New thread";
    open.title = new Date(thread.updated_at).toLocaleString();
    if (thread.thread_id === selected) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => openThread(thread.thread_id));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "thread-delete quiet";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Delete thread ${open.textContent}`);
    remove.addEventListener("click", () => deleteThread(thread.thread_id));
    item.append(open, remove);
    return item;
  }));
}

function markSelected() {
  for (const button of document.querySelectorAll(".thread-title")) {
    if (button.parentElement.dataset.thread === selected) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function select(thread) {
  selected = thread;
  if (thread) sessionStorage.setItem(SELECTED_KEY, thread); else sessionStorage.removeItem(SELECTED_KEY);
  markSelected();
}

function newThread() {
  abortRunning();
  select(null);
  $("messages").replaceChildren();
  $("input").focus();
}

async function deleteThread(thread) {
  try {
    await guarded(() => api.deleteThread(thread));
  } catch (error) {
    notice(error.message);
    return;
  }
  if (thread === selected) newThread();
  await refreshThreads();
}

async function openThread(thread) {
  abortRunning();
  select(thread);
  let history;
  try {
    history = await guarded(() => api.messages(thread));
  } catch (error) {
    if (error.status === 404) { sessionStorage.removeItem(RUNNING_KEY); newThread(); return; }
    notice(error.message);
    return;
  }
  if (selected !== thread) return;   // another thread was opened meanwhile
  $("messages").replaceChildren();
  let question = "";
  for (const message of history.messages) {
    if (message.role === "user") {
      question = message.content;
      addMessage("user").body.textContent = message.content;
      continue;
    }
    const view = addMessage("assistant");
    renderMarkdown(view.body, message.content);
    if (message.status === "streaming") {
      // Still running (this tab reloaded, or it runs elsewhere): follow it from what the history holds.
      const lastID = `${message.turn_id}:${utf8Length(message.content)}`;
      startReply({ thread, question, text: message.content, turnID: message.turn_id, lastID, view },
        (reply, handlers) => api.resume(thread, reply.lastID, handlers));
    } else {
      describeEnd(view, message.status, message.stop_reason, message.error, () => retry(thread, question));
    }
  }
  if (!running) sessionStorage.removeItem(RUNNING_KEY);
  $("input").focus();
}

// MARK: Replies

function send(question) {
  let thread = selected;
  if (!thread) {
    thread = crypto.randomUUID();
    select(thread);
  }
  addMessage("user").body.textContent = question;
  const view = addMessage("assistant");
  startReply({ thread, question, text: "", view }, (reply, handlers) => api.ask(question, thread, timeZone, handlers));
}

function retry(thread, question) {
  if (running || thread !== selected) return;
  send(question);
}

/** Streams a reply into `reply.view` with `open(reply, handlers)`, resuming after a dropped connection. */
async function startReply(reply, open) {
  running = reply;
  reply.controller = new AbortController();
  saveRunning();
  setRunning(true);
  const view = reply.view;
  view.item.classList.add("streaming");
  view.body.setAttribute("aria-live", "polite");
  if (!reply.text) view.body.replaceChildren(typingIndicator());
  let renderPending = false;
  const handlers = {
    signal: reply.controller.signal,
    onOpen: (_thread, turnID) => {
      if (turnID) reply.turnID = turnID;
      if (!reply.listed) { reply.listed = true; refreshThreads(); }   // a new thread shows up in the list
    },
    onActivity: (event) => showActivity(reply, event),
    onChunk: (text, id) => {
      reply.text += text;
      if (id) reply.lastID = id;
      saveRunning();
      if (renderPending) return;
      renderPending = true;
      requestAnimationFrame(() => {
        renderPending = false;
        if (running !== reply) return;
        renderMarkdown(view.body, reply.text);
        view.item.scrollIntoView({ block: "end" });
      });
    },
  };
  let end;
  for (let attempt = 0; ; attempt++) {
    try {
      end = await open(reply, handlers);
      break;
    } catch (error) {
      if (reply.controller.signal.aborted) return;   // this tab moved on; the reply goes on in the service
      if (error instanceof ApiError || attempt >= 5) { end = { error: { type: error.type, message: error.message } }; break; }
      await sleep(Math.min(500 * 2 ** attempt, 5000));
      if (reply.controller.signal.aborted) return;
      // The connection dropped: ask for the rest from the last id (or the turn's start).
      const position = reply.lastID ?? (reply.turnID ? `${reply.turnID}:0` : null);
      open = (_reply, h) => api.resume(reply.thread, position, h);
    }
  }
  if (running !== reply) return;
  finishReply(reply, end);
}

/**
 * Tool activity, compactly: one line per call above the reply ("search_memory …" while it runs, then "✓" or "✗" and
 * the result's summary). Text only (textContent); a resume that replays a call updates its line, never adds one.
 */
function showActivity(reply, event) {
  const view = reply.view;
  if (!view.tools) {
    view.tools = document.createElement("ul");
    view.tools.className = "tools";
    view.tools.setAttribute("aria-label", "Tool calls");
    view.item.insertBefore(view.tools, view.body);
  }
  const activity = event.tool_call ?? event.tool_result;
  if (typeof activity.id !== "string") return;
  let line = [...view.tools.children].find((li) => li.dataset.tool === activity.id);
  if (!line) {
    line = document.createElement("li");
    line.dataset.tool = activity.id;
    line.className = "tool running";
    view.tools.append(line);
  }
  if (event.tool_call) {
    if (!line.classList.contains("running")) return;   // replayed after its result
    const input = JSON.stringify(activity.input ?? {});
    line.textContent = `${activity.name} ${input.length > 80 ? input.slice(0, 79) + "…" : input}`;
  } else {
    line.className = activity.is_error ? "tool failed" : "tool ok";
    line.textContent = `${activity.is_error ? "✗" : "✓"} ${activity.name}: ${activity.summary ?? ""}`;
  }
}

function finishReply(reply, end) {
  running = null;
  sessionStorage.removeItem(RUNNING_KEY);
  setRunning(false);
  const view = reply.view;
  view.item.classList.remove("streaming");
  view.body.removeAttribute("aria-live");
  renderMarkdown(view.body, reply.text);
  if (end.empty) {
    openThread(reply.thread);   // nothing left to follow: show what the service stored
    return;
  }
  if (end.error?.type === "unauthorized" && api.auth === "supabase") { api.signOut(); showSignIn("Sign in again."); return; }
  if (end.error) describeEnd(view, "failed", null, end.error, () => retry(reply.thread, reply.question));
  else describeEnd(view, "completed", end.stop_reason, null);
  refreshThreads();
  $("input").focus();
}

/** Adds the ending of a stored or finished reply under it: a note for Stop, the error and Retry for a failure. */
function describeEnd(view, status, stopReason, error, onRetry) {
  view.meta.replaceChildren();
  if (status === "cancelled" || stopReason === "cancelled") {
    view.meta.textContent = "Stopped.";
    return;
  }
  if (status === "completed" || status === "streaming") return;
  const message = document.createElement("span");
  message.className = "error-text";
  message.setAttribute("role", "alert");
  message.textContent = error?.message ? `Error: ${error.message}` : `This reply was ${status}.`;
  view.meta.append(message);
  if (onRetry) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "retry";
    button.textContent = "Retry";
    button.addEventListener("click", onRetry);
    view.meta.append(" ", button);
  }
}

async function stop() {
  if (!running) return;
  $("stop").disabled = true;
  try {
    await guarded(() => api.cancel(running.thread));
  } catch (error) {
    if (error.type !== "no_active_turn") notice(error.message);   // already over: its stream ends by itself
  }
}

function abortRunning() {
  if (!running) return;
  running.controller.abort();
  running = null;
  sessionStorage.removeItem(RUNNING_KEY);
  setRunning(false);
}

// MARK: Helpers

function readRunning() {
  try { return JSON.parse(sessionStorage.getItem(RUNNING_KEY)); } catch { return null; }
}

function saveRunning() {
  sessionStorage.setItem(RUNNING_KEY, JSON.stringify({ thread: running.thread, last_id: running.lastID ?? null }));
}

function setRunning(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  $("stop").disabled = false;
  $("messages").setAttribute("aria-busy", on ? "true" : "false");
}

function addMessage(role) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const body = document.createElement("div");
  body.className = "bubble";
  const meta = document.createElement("div");
  meta.className = "meta";
  item.append(body, meta);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return { item, body, meta };
}

function typingIndicator() {
  const typing = document.createElement("span");
  typing.className = "typing";
  typing.setAttribute("role", "img");
  typing.setAttribute("aria-label", "Claude is typing");
  typing.append(document.createElement("span"), document.createElement("span"), document.createElement("span"));
  return typing;
}

function notice(text) {
  $("notice").textContent = text;
  setTimeout(() => { if ($("notice").textContent === text) $("notice").textContent = ""; }, 6000);
}

/** Runs an API call; a 401 with Supabase auth signs out and shows the sign-in form. */
async function guarded(call) {
  try {
    return await call();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && api.auth === "supabase") {
      api.signOut();
      showSignIn("Your session ended; sign in again.");
    }
    throw error;
  }
}

boot().catch((error) => { document.body.textContent = `The page could not start: ${error.message}`; });
