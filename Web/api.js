// The service's HTTP API as the page uses it: identity (Supabase Auth or a development user id), JSON calls, and
// SSE streams read from fetch bodies (so the Authorization header can be sent, which EventSource cannot).

const SESSION_KEY = "agent-service.session";
const DEV_USER_KEY = "agent-service.user-id";

/** An error answer of the API: `{"error": {"type", "message"}}` with its HTTP status. */
export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export class Api {
  constructor(config) {
    this.base = config.api_base ?? "";
    this.auth = config.auth;
    this.supabaseURL = config.supabase_url;
    this.anonKey = config.supabase_anon_key;
    this.session = null;
    this.userID = null;
    this.refreshTimer = null;
    if (this.auth === "development") {
      this.userID = localStorage.getItem(DEV_USER_KEY);
      if (!this.userID) {
        this.userID = crypto.randomUUID();
        localStorage.setItem(DEV_USER_KEY, this.userID);
      }
    } else {
      try { this.session = JSON.parse(localStorage.getItem(SESSION_KEY)); } catch { this.session = null; }
    }
  }

  get signedIn() { return this.auth === "development" || this.session !== null; }

  // MARK: Supabase Auth

  async signIn(email, password) {
    await this.token("password", { email, password });
  }

  signOut() {
    this.session = null;
    clearTimeout(this.refreshTimer);
    localStorage.removeItem(SESSION_KEY);
  }

  /** Refreshes the session now if it expires within a minute, and schedules the next refresh. */
  async ensureFresh() {
    if (!this.session) return;
    const secondsLeft = this.session.expires_at - Date.now() / 1000;
    if (secondsLeft < 60) await this.token("refresh_token", { refresh_token: this.session.refresh_token });
    this.scheduleRefresh();
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    if (!this.session) return;
    const delay = Math.max(5, this.session.expires_at - Date.now() / 1000 - 60) * 1000;
    // A failed refresh signs out (see token); a network error is tried again at the next call.
    this.refreshTimer = setTimeout(() => this.ensureFresh().catch(() => {}), delay);
  }

  async token(grantType, body) {
    if (!this.supabaseURL || !this.anonKey) {
      throw new ApiError(0, "not_configured", "Sign-in needs SUPABASE_URL and SUPABASE_ANON_KEY on the service.");
    }
    const response = await fetch(`${this.supabaseURL}/auth/v1/token?grant_type=${grantType}`, {
      method: "POST",
      headers: { apikey: this.anonKey, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      if (grantType === "refresh_token") {   // the session is over: back to the sign-in form
        this.signOut();
        this.onSignedOut?.("Your session ended; sign in again.");
      }
      throw new ApiError(response.status, answer.error ?? "auth_error",
        answer.error_description ?? answer.msg ?? answer.message ?? `sign-in failed (${response.status})`);
    }
    const expiresAt = answer.expires_at ?? Math.floor(Date.now() / 1000) + (answer.expires_in ?? 3600);
    this.session = { access_token: answer.access_token, refresh_token: answer.refresh_token, expires_at: expiresAt };
    localStorage.setItem(SESSION_KEY, JSON.stringify(this.session));
    this.scheduleRefresh();
  }

  // MARK: Requests

  headers(extra = {}) {
    const headers = { ...extra };
    if (this.session) headers.Authorization = `Bearer ${this.session.access_token}`;
    return headers;
  }

  /** `path` with `user_id` added in development mode and `params` as the query. */
  url(path, params = {}) {
    const query = new URLSearchParams(params);
    if (this.userID) query.set("user_id", this.userID);
    const text = query.toString();
    return `${this.base}${path}${text ? `?${text}` : ""}`;
  }

  async json(method, path, params) {
    await this.ensureFresh();
    const response = await fetch(this.url(path, params), { method, headers: this.headers() });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw Api.error(response, answer);
    return answer;
  }

  static error(response, answer) {
    if (response.status === 401) return new ApiError(401, "unauthorized", answer.error?.message ?? "sign in again");
    return new ApiError(response.status, answer.error?.type ?? "http_error",
      answer.error?.message ?? `the service answered ${response.status}`);
  }

  listThreads() { return this.json("GET", "/threads", { limit: "50" }); }
  messages(thread) { return this.json("GET", `/threads/${encodeURIComponent(thread)}/messages`, { limit: "100" }); }
  deleteThread(thread) { return this.json("DELETE", `/threads/${encodeURIComponent(thread)}`); }
  cancel(thread) { return this.json("POST", `/threads/${encodeURIComponent(thread)}/cancel`); }

  // MARK: Streams

  /** Starts a reply: POST /query_stream. See `readStream` for `handlers`. */
  async ask(question, thread, timeZone, handlers) {
    await this.ensureFresh();
    const body = { question, thread_id: thread, user_timezone: timeZone };
    if (this.userID) body.user_id = this.userID;
    return this.readStream(fetch(`${this.base}/query_stream`, {
      method: "POST",
      headers: this.headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(body),
      signal: handlers.signal,
    }), handlers);
  }

  /** Resumes a reply: GET /threads/{id}/stream from `lastID` (`<turn>:<offset>`), or from the start. */
  async resume(thread, lastID, handlers) {
    await this.ensureFresh();
    const headers = this.headers({ Accept: "text/event-stream" });
    if (lastID) headers["Last-Event-ID"] = lastID;
    return this.readStream(fetch(this.url(`/threads/${encodeURIComponent(thread)}/stream`), {
      headers, signal: handlers.signal,
    }), handlers);
  }

  /**
   * Reads an SSE response: `handlers.onChunk(text, id)` per chunk frame, `handlers.onActivity(event)` per
   * `tool_call` / `tool_result` frame; resolves with the final event
   * (`{done: true, ...}` or `{error: {...}}`), with `{empty: true}` for 204 (nothing to resume), or rejects with an
   * `ApiError` (an HTTP error before the stream) or a `TypeError` (the connection dropped: resume).
   */
  async readStream(request, handlers) {
    const response = await request;
    if (response.status === 204) return { empty: true };
    if (!response.ok) throw Api.error(response, await response.json().catch(() => ({})));
    handlers.onOpen?.(response.headers.get("X-Thread-Id"), response.headers.get("X-Turn-Id"));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new TypeError("the stream ended before its last frame");
      buffer += value;  // the service ends lines with \n only
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id = null;
        const data = [];
        for (const line of frame.split("\n")) {
          if (line.startsWith("id:")) id = line.slice(3).trimStart();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length === 0) continue;  // ": ping"
        const event = JSON.parse(data.join("\n"));
        if (typeof event.chunk === "string") handlers.onChunk(event.chunk, id);
        else if (event.done || event.error) { reader.cancel().catch(() => {}); return event; }
        else if (event.tool_call || event.tool_result) handlers.onActivity?.(event);
        // Anything else (a newer event this page does not know) is skipped, as the contract asks.
      }
    }
  }
}
