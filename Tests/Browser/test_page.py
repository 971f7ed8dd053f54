#!/usr/bin/env python3
"""Browser tests of the reference page (Web/) in headless Chromium, against the real agent-service binary.

Usage: python3 Tests/Browser/test_page.py .build/debug/agent-service

The binary runs with the embedded PostgreSQL (in a temporary folder) and the offline Claude stub steered by
[[stub:...]] directives in the questions. Prints one line per scenario and the measured figures; exits non-zero
on the first failure (the service's log is printed then).
"""
import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCREENSHOT = os.path.join(ROOT, ".build", "browser-screenshot.png")


class AgentService:
    """The binary in a temporary working directory (so .agent-service/ lands there), on a free port."""

    def __init__(self, binary, extra_env=None):
        self.binary = os.path.abspath(binary)
        self.workdir = tempfile.mkdtemp(prefix="agent-browser-")
        os.chmod(self.workdir, 0o755)  # the embedded cluster runs as the postgres user when we are root
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DATABASE_", "ANTHROPIC_", "SUPABASE_", "AUTH_", "CLAUDE_", "CORS_", "WEB_UI"))}
        env.update({
            "PORT": "0", "HOST": "127.0.0.1", "OFFLINE_STUB_DIRECTIVES": "true", "CLAUDE_MAX_RETRIES": "0",
            "SPOOL_DIR": os.path.join(self.workdir, "spool"), "LOG_LEVEL": "info",
        })
        env.update(extra_env or {})
        self.env = env
        self.log_path = os.path.join(self.workdir, "service.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([self.binary, "serve"], cwd=self.workdir, env=env,
                                        stdout=self.log, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()
        self.port = None

        def pump():
            for line in self.process.stderr:
                self.log.write(line)
                self.log.flush()
                match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if match and not ready.is_set():
                    self.port = int(match.group(1))
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(120) or self.port is None:
            self.stop()
            raise RuntimeError("agent-service did not start:\n" + self.read_log())
        self.base = f"http://127.0.0.1:{self.port}"

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def get(self, path, headers=None):
        request = urllib.request.Request(self.base + path, headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()

    def get_json(self, path, headers=None):
        return json.loads(self.get(path, headers)[2])

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # The embedded PostgreSQL outlives the service on purpose (several processes may share it): stop it.
        subprocess.run([self.binary, "db", "stop"], cwd=self.workdir, env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        self.log.close()

    def cleanup(self):
        shutil.rmtree(self.workdir, ignore_errors=True)


def make_driver():
    options = Options()
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1100,760", "--disable-extensions", "--no-first-run"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=ChromeService("/usr/bin/chromedriver"), options=options)


class Page:
    """The reference page in one browser tab, with helpers that read what a user sees."""

    PROBE = """
    const messages = document.getElementById('messages');
    const probe = window.__probe = {sentAt: null, typingAt: null, firstTextAt: null, firstPaintAt: null, samples: []};
    document.getElementById('input').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && probe.sentAt === null) probe.sentAt = performance.now();
    }, {capture: true});
    const last = () => { const all = messages.querySelectorAll('.message.assistant .bubble'); return all[all.length - 1]; };
    const observer = new MutationObserver(() => {
      const bubble = last();
      if (!bubble) return;
      if (bubble.querySelector('.typing') && probe.typingAt === null) probe.typingAt = performance.now();
      if (probe.firstTextAt === null && !bubble.querySelector('.typing') && bubble.textContent.length > 0) {
        probe.firstTextAt = performance.now();
        requestAnimationFrame(() => requestAnimationFrame(() => { probe.firstPaintAt = performance.now(); }));
        observer.disconnect();
      }
    });
    observer.observe(messages, {childList: true, subtree: true, characterData: true});
    probe.timer = setInterval(() => {
      const bubble = last();
      probe.samples.push([performance.now(), bubble && !bubble.querySelector('.typing') ? bubble.textContent.length : 0,
                          !!(bubble && bubble.querySelector('.typing'))]);
    }, 50);
    """

    def __init__(self, driver, service):
        self.driver = driver
        self.service = service

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, condition, timeout=20, message="condition"):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda _: condition())
        except TimeoutException:
            raise AssertionError(f"timed out waiting for {message}")

    def open(self):
        self.driver.get(self.service.base + "/")
        self.wait(lambda: self.js("return !document.getElementById('app').hidden"), message="the page to start")

    def new_thread(self):
        self.driver.find_element(By.ID, "new-thread").click()
        self.wait(lambda: self.js("return document.querySelectorAll('#messages li').length === 0"))

    def send(self, text, probe=False):
        if probe:
            self.js(self.PROBE)
        box = self.driver.find_element(By.ID, "input")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def thread(self):
        return self.js("return sessionStorage.getItem('agent-service.thread')")

    def reply_text(self):
        return self.js("""const all = document.querySelectorAll('#messages .message.assistant .bubble');
            const b = all[all.length - 1]; return b && !b.querySelector('.typing') ? b.textContent : null;""")

    def reply_running(self):
        return self.js("return !!document.querySelector('#messages .message.assistant.streaming')")

    def wait_reply_done(self, timeout=30):
        self.wait(lambda: not self.reply_running() and self.js("return document.getElementById('stop').hidden"),
                  timeout, "the reply to end")
        return self.reply_text()

    def messages(self, thread=None):
        return self.service.get_json(f"/threads/{thread or self.thread()}/messages?user_id={self.user()}")

    def user(self):
        return self.js("return localStorage.getItem('agent-service.user-id')")

    def console_errors(self, expected=()):
        errors = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            if any(re.search(pattern, entry["message"]) for pattern in expected):
                continue
            errors.append(entry["message"])
        return errors


def squash(text):
    return re.sub(r"\s+", "", text or "")


# MARK: Scenarios

def scenario_stream(page, figures):
    """(a) Text grows delta by delta; typing indicator until the first chunk; the thread is listed; reload keeps it."""
    page.open()
    page.new_thread()
    page.send("Tell me about streaming [[stub:slow 100ms x 20]]", probe=True)
    final = page.wait_reply_done()
    probe = page.js("clearInterval(window.__probe.timer); return window.__probe")
    lengths = [length for _, length, _ in probe["samples"]]
    distinct = sorted(set(length for length in lengths if length > 0))
    assert lengths == sorted(lengths), f"the reply shrank while streaming: {lengths}"
    assert len(distinct) >= 6, f"the reply did not grow delta by delta: {distinct}"
    assert distinct[-1] <= len(final), f"last sample {distinct[-1]} > final {len(final)}"
    assert probe["typingAt"] is not None and probe["firstTextAt"] is not None, probe
    assert probe["typingAt"] <= probe["firstTextAt"], "the typing indicator did not come before the first chunk"
    assert not page.js("return !!document.querySelector('#messages .typing')"), "the typing indicator stayed"
    figures["send_to_first_paint_ms"] = probe["firstPaintAt"] - probe["sentAt"]
    figures["send_to_first_chunk_ms"] = probe["firstTextAt"] - probe["sentAt"]
    thread = page.thread()
    page.wait(lambda: page.js("return !!document.querySelector(`#threads li[data-thread='${arguments[0]}']`)", thread),
              message="the thread in the list")
    assert page.js("return document.activeElement.id") == "input", "focus did not return to the input"
    page.driver.refresh()
    page.wait(lambda: page.js("return document.querySelectorAll('#messages .message').length") == 2,
              message="the history after reload")
    assert page.reply_text() == final, "the reloaded history differs from what streamed"
    stored = page.messages(thread)["messages"][-1]
    assert stored["status"] == "completed" and squash(stored["content"]) == squash(final)


def scenario_stop(page, figures):
    """(b) Stop mid-reply: growth stops, and the stored reply equals what was shown."""
    page.new_thread()
    page.send("A long story please [[stub:slow 100ms x 60]]")
    page.wait(lambda: len(page.reply_text() or "") > 10, message="some reply text")
    assert page.driver.find_element(By.ID, "stop").is_displayed()
    page.driver.find_element(By.ID, "stop").click()
    shown = page.wait_reply_done()
    page.wait(lambda: page.js("return document.querySelector('#messages .message.assistant .meta').textContent")
              == "Stopped.", message="the Stopped note")
    time.sleep(0.8)
    assert page.reply_text() == shown, "the reply kept growing after Stop"
    stored = page.messages()["messages"][-1]
    assert stored["status"] == "cancelled", stored
    assert squash(stored["content"]) == squash(shown), (stored["content"], shown)
    page.driver.refresh()
    page.wait(lambda: page.js("return document.querySelectorAll('#messages .message').length") == 2)
    assert page.reply_text() == shown, "after reload the stored reply differs from what was shown"


def scenario_reload(page, figures):
    """(c) Reload mid-reply: the page resumes from the last id and ends with the full reply."""
    page.new_thread()
    page.send("Keep going while I reload [[stub:slow 100ms x 30]]")
    page.wait(lambda: len(page.reply_text() or "") > 5, message="some reply text")
    thread = page.thread()
    before = page.reply_text()
    page.driver.refresh()
    page.wait(lambda: page.js("return document.querySelectorAll('#messages .message').length") == 2,
              message="the history after reload")
    assert page.thread() == thread
    resumed_running = page.reply_running()
    final = page.wait_reply_done()
    stored = page.messages(thread)["messages"][-1]
    assert stored["status"] == "completed", stored
    assert squash(final) == squash(stored["content"]), (final, stored["content"])
    assert squash(final).startswith(squash(before)) and len(final) > len(before)
    assert resumed_running, "the reloaded page did not resume the running reply"


def scenario_drop(page, figures):
    """A dropped connection mid-reply: the page resumes from its last id and ends with the full reply."""
    page.new_thread()
    page.send("Survive a network drop [[stub:slow 100ms x 30]]")
    page.wait(lambda: len(page.reply_text() or "") > 5, message="some reply text")
    conditions = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    page.driver.execute_cdp_cmd("Network.enable", {})
    page.driver.execute_cdp_cmd("Network.emulateNetworkConditions", conditions)
    time.sleep(0.7)
    page.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {**conditions, "offline": False})
    page.driver.execute_cdp_cmd("Network.disable", {})
    final = page.wait_reply_done()
    resumes = page.js("return performance.getEntriesByType('resource').filter(e => e.name.includes('/stream')).length")
    assert resumes >= 1, "the connection did not drop (no resume request)"
    stored = page.messages()["messages"][-1]
    assert stored["status"] == "completed", stored
    assert squash(final) == squash(stored["content"]), (final, stored["content"])
    assert not page.js("return !!document.querySelector('#messages .error-text')"), "an error was shown"
    return [r"ERR_INTERNET_DISCONNECTED"]  # the drop itself, caused on purpose


def scenario_retry(page, figures):
    """(d) An upstream failure shows an error in place; Retry sends again and works."""
    page.new_thread()
    page.send("This fails once [[stub:fail-first 1 then ok]]")
    page.wait_reply_done()
    page.wait(lambda: page.js("return !!document.querySelector('#messages .message.assistant .error-text')"),
              message="the error")
    page.driver.find_element(By.CSS_SELECTOR, "#messages .message.assistant .retry").click()
    page.wait(lambda: page.js("return document.querySelectorAll('#messages .message.assistant').length") == 2)
    final = page.wait_reply_done()
    assert not page.js("return !!document.querySelector('#messages .message.assistant:last-child .error-text')")
    assert final and "This fails once" in final, final
    stored = page.messages()["messages"]
    assert stored[-1]["status"] == "completed", stored[-1]


def scenario_tools(page, figures):
    """(h) A tool round: one compact line per call above the reply (text only), the text before and after it in the
    bubble; the tool events neither end the stream nor leak into the text."""
    page.new_thread()
    page.send('Look it up [[stub:tool search_memory {"query":"<b>zanzibar</b>"}]]')
    final = page.wait_reply_done()
    lines = page.js("""const all = document.querySelectorAll('#messages .message.assistant');
        return [...all[all.length - 1].querySelectorAll('.tools .tool')].map(li => [li.className, li.textContent]);""")
    assert len(lines) == 1, lines
    assert lines[0][0] == "tool ok" and lines[0][1].startswith("✓ search_memory: "), lines
    assert not page.js("return !!document.querySelector('#messages .tools b')"), "tool text was rendered as HTML"
    assert final and final.startswith("Calling search_memory.") and "Tool results:" in final, final
    stored = page.messages()["messages"][-1]
    assert stored["status"] == "completed" and squash(stored["content"]) == squash(final), stored


def scenario_injection(page, figures):
    """(e) HTML and javascript: links in a reply are text: nothing runs."""
    page.new_thread()
    page.send("[[stub:reply Look <img src=x onerror=alert(1)> and [x](javascript:alert(1)) and "
              "[docs](https://example.com/a) and <script>alert(2)</script> **bold** `code`]]")
    final = page.wait_reply_done()
    time.sleep(0.3)
    try:
        page.driver.switch_to.alert
        raise AssertionError("an alert opened")
    except NoAlertPresentException:
        pass
    assert "<img src=x onerror=alert(1)>" in final, final
    assert page.js("return document.querySelectorAll('#messages img, #messages script').length") == 0
    hrefs = page.js("return [...document.querySelectorAll('#messages a')].map(a => [a.href, a.target, a.rel])")
    assert hrefs == [["https://example.com/a", "_blank", "noopener noreferrer"]], hrefs
    assert page.js("return document.querySelector('#messages .message.assistant strong').textContent") == "bold"


def scenario_screenshot(page, figures):
    """(g) A screenshot of a conversation with Markdown."""
    page.new_thread()
    page.js("""document.getElementById('input').value = arguments[0];
               document.getElementById('send').click();""",
            "How do I stream a reply? [[stub:reply Use **fetch** with a streamed body reader:\n\n"
            "```js\nconst reader = response.body.getReader();\n```\n\n"
            "- each `data:` frame is one delta\n- resume with `Last-Event-ID`\n\n"
            "See [the README](https://example.com/readme).]]")
    page.wait_reply_done()
    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    page.driver.save_screenshot(SCREENSHOT)


def page_weight(page, figures):
    page.driver.get(page.service.base + "/")
    page.wait(lambda: page.js("return !document.getElementById('app').hidden"))
    time.sleep(0.5)
    entries = page.js("""return [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')]
        .map(e => [e.name, e.encodedBodySize, e.transferSize])""")
    static = [e for e in entries if not re.search(r"/threads", e[0])]
    figures["page_requests"] = len(static)
    figures["page_bytes"] = sum(e[1] for e in static)
    figures["page_all_requests"] = len(entries)


# MARK: Auth

JWT_SECRET = "browser-test-secret-that-is-long-enough-0123456789"
ANON_KEY = "sb_publishable_browser_test_0123456789"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims, secret):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


class AuthStandIn:
    """A tiny stand-in for Supabase Auth's token endpoint: password and refresh_token grants, HS256 tokens."""

    def __init__(self, lifetime=65):
        self.grants = []
        self.user = str(uuid.uuid4())
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def cors(self):
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "apikey, content-type, authorization")
                self.send_header("Access-Control-Allow-Methods", "POST, GET, OPTIONS")

            def answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.cors()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_OPTIONS(self):
                self.send_response(204)
                self.cors()
                self.end_headers()

            def do_GET(self):
                if self.path.endswith("/.well-known/jwks.json"):
                    self.answer(200, {"keys": []})
                else:
                    self.answer(404, {"error": "not_found"})

            def do_POST(self):
                url = urllib.parse.urlparse(self.path)
                grant = urllib.parse.parse_qs(url.query).get("grant_type", [""])[0]
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                stand_in.grants.append((grant, self.headers.get("apikey")))
                if url.path != "/auth/v1/token" or self.headers.get("apikey") != ANON_KEY:
                    return self.answer(401, {"error": "invalid_api_key", "error_description": "bad apikey"})
                if grant == "password" and body.get("password") != "correct horse":
                    return self.answer(400, {"error": "invalid_grant", "error_description": "Invalid login credentials"})
                if grant not in ("password", "refresh_token"):
                    return self.answer(400, {"error": "unsupported_grant_type"})
                now = int(time.time())
                claims = {"sub": stand_in.user, "role": "authenticated", "aud": "authenticated", "iat": now,
                          "exp": now + lifetime, "iss": stand_in.issuer, "email": body.get("email")}
                self.answer(200, {"access_token": hs256(claims, JWT_SECRET), "token_type": "bearer",
                                  "expires_in": lifetime, "expires_at": now + lifetime,
                                  "refresh_token": f"refresh-{len(stand_in.grants)}", "user": {"id": stand_in.user}})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = f"{self.url}/auth/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def scenario_auth(binary, figures):
    """Auth on: sign in against the stand-in, chat with Bearer tokens, refresh before expiry, sign out."""
    auth = AuthStandIn()
    service = AgentService(binary, {"SUPABASE_URL": auth.url, "SUPABASE_JWT_SECRET": JWT_SECRET,
                                    "AUTH_ISSUER": auth.issuer, "SUPABASE_ANON_KEY": ANON_KEY})
    driver = make_driver()
    try:
        page = Page(driver, service)
        config = service.get_json("/config.json")
        assert config == {"api_base": "", "auth": "supabase", "supabase_url": auth.url,
                          "supabase_anon_key": ANON_KEY}, config
        csp = service.get("/")[1]["Content-Security-Policy"]
        assert f"connect-src 'self' {auth.url};" in csp, csp
        driver.get(service.base + "/")
        page.wait(lambda: page.js("return !document.getElementById('signin').hidden"), message="the sign-in form")
        driver.find_element(By.ID, "email").send_keys("ada@example.com")
        driver.find_element(By.ID, "password").send_keys("wrong")
        driver.find_element(By.ID, "password").send_keys(Keys.ENTER)
        page.wait(lambda: "Invalid login" in driver.find_element(By.ID, "signin-error").text, message="the refusal")
        driver.find_element(By.ID, "password").clear()
        driver.find_element(By.ID, "password").send_keys("correct horse" + Keys.ENTER)
        page.wait(lambda: page.js("return !document.getElementById('app').hidden"), message="the app after sign-in")
        page.send("Hello with a token [[stub:slow 50ms x 10]]")
        final = page.wait_reply_done()
        assert final and "Hello with a token" in final, final
        thread = page.thread()
        page.wait(lambda: page.js("return !!document.querySelector(`#threads li[data-thread='${arguments[0]}']`)",
                                  thread), message="the thread in the list")
        # The thread is the token's user's: the API answers it only with that user's token.
        token = page.js("return JSON.parse(localStorage.getItem('agent-service.session')).access_token")
        stored = service.get_json(f"/threads/{thread}/messages", {"Authorization": f"Bearer {token}"})
        assert stored["messages"][-1]["status"] == "completed"
        # Tokens live 65 s; the page refreshes a minute before expiry (here: after 5 s).
        page.wait(lambda: any(grant == "refresh_token" for grant, _ in auth.grants), timeout=20,
                  message="a refresh_token grant")
        page.wait(lambda: page.js("return JSON.parse(localStorage.getItem('agent-service.session')).access_token")
                  != token, message="the refreshed token")
        page.driver.refresh()
        page.wait(lambda: page.js("return document.querySelectorAll('#messages .message').length") == 2,
                  message="the history with the refreshed token")
        assert all(key == ANON_KEY for _, key in auth.grants), auth.grants
        driver.find_element(By.ID, "sign-out").click()
        page.wait(lambda: page.js("return !document.getElementById('signin').hidden"), message="signed out")
        assert page.js("return localStorage.getItem('agent-service.session')") is None
        errors = page.console_errors(expected=[re.escape(auth.url) + r"/auth/v1/token.* 400"])
        assert not errors, f"console errors with auth: {errors}"
    except BaseException:
        try:
            print("sign-in form says:", driver.find_element(By.ID, "signin-error").text, file=sys.stderr)
            print("console:", driver.get_log("browser"), file=sys.stderr)
        except Exception:
            pass
        print("---- service log (auth) ----\n" + service.read_log()[-4000:], file=sys.stderr)
        raise
    finally:
        driver.quit()
        service.stop()
        service.cleanup()
        auth.stop()


def run(binary):
    figures = {}
    scenarios = []
    started = time.monotonic()
    service = AgentService(binary)
    driver = None
    failed = False
    try:
        driver = make_driver()
        page = Page(driver, service)
        scenarios = [scenario_stream, scenario_stop, scenario_reload, scenario_drop, scenario_retry, scenario_tools,
                     scenario_injection,
                     scenario_screenshot, page_weight]
        for scenario in scenarios:
            t0 = time.monotonic()
            expected = scenario(page, figures) or []
            # (f) No console errors, but the expected ones: a Stop may race the end of its reply (409).
            errors = page.console_errors(expected=[r"/cancel\b.*409"] + expected)
            assert not errors, f"console errors in {scenario.__name__}: {errors}"
            if os.environ.get("BROWSER_TESTS_VERBOSE"):
                print(f"ok  {scenario.__name__} ({time.monotonic() - t0:.1f} s)")
    except BaseException:
        failed = True
        if driver:
            try:
                driver.save_screenshot(os.path.join(ROOT, ".build", "browser-failure.png"))
            except Exception:
                pass
        raise
    finally:
        if driver:
            driver.quit()
        service.stop()
        if failed:
            print("---- service log ----\n" + service.read_log()[-6000:], file=sys.stderr)
        service.cleanup()
    t0 = time.monotonic()
    scenario_auth(binary, figures)
    scenarios.append(scenario_auth)
    if os.environ.get("BROWSER_TESTS_VERBOSE"):
        print(f"ok  scenario_auth ({time.monotonic() - t0:.1f} s)")
    print(f"browser tests: {len(scenarios)} scenarios ok; send to first painted chunk: {figures['send_to_first_paint_ms']:.0f} ms "
          f"(first chunk in the DOM: {figures['send_to_first_chunk_ms']:.0f} ms); "
          f"page weight: {figures['page_bytes']} bytes in {figures['page_requests']} requests "
          f"({figures['page_all_requests']} with the thread list); "
          f"browser suite: {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: test_page.py <path of the agent-service binary>")
    run(sys.argv[1])
