"""analytics.js (@segment/analytics-next from npm, unchanged) in Chromium, against the real API and worker.

A page on its own origin (a local server on another port than the API) loads the UMD bundle from
node_modules with its settings inline, and calls identify, page and track. analytics.js posts each
call as text/plain JSON carrying the writeKey (and, since 1.7x, Basic auth) to /v1/i, /v1/p, /v1/t,
or batches to /v1/b; the Authorization header makes every one a CORS request with a preflight.

Nothing may leave the machine: Chromium gets a proxy on a closed port of 127.0.0.1 and a resolver
that resolves no host name, so any request to another host fails at once, and the test asserts
that the page attempted none. (Not `page.route`: while any route is set, Playwright answers CORS
preflights itself, so the API's own preflight answers would go untested.)

Needs `npm ci` in the repository root (package.json pins the version).
"""

import base64
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cdp.models import Customer, Event, Identity
from organizations.api_keys import api_key_create
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.factories import ProjectFactory
from tests.live import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "node_modules" / "@segment" / "analytics-next"
BUNDLES = PACKAGE / "dist" / "umd"
PAGE = Path(__file__).resolve().parent / "sdk_page" / "index.html"
LOOPBACK = {"127.0.0.1", "localhost"}
DELIVERY_TIMEOUT = 15  # seconds for analytics.js to get the API's answers


@pytest.fixture(scope="module")
def analytics_next() -> str:
    """The installed analytics-next, which must be the version package.json pins."""
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["@segment/analytics-next"]
    manifest = PACKAGE / "package.json"
    installed = json.loads(manifest.read_text())["version"] if manifest.is_file() else None
    if installed != pinned or not (BUNDLES / "index.js").is_file():
        pytest.fail(
            f"@segment/analytics-next {pinned} is not installed in node_modules (found: {installed}): "
            f"run `npm ci` in {ROOT}",
            pytrace=False,
        )
    return installed


@dataclass
class PageServer:
    """The test page's origin: the page, and analytics-next's bundles from node_modules."""

    server: ThreadingHTTPServer
    served: list[tuple[str, int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _page_handler(record: list[tuple[str, int]]) -> type[BaseHTTPRequestHandler]:
    bundles = {path.name: path for path in BUNDLES.glob("*.js")}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            path = urlsplit(self.path).path
            if path == "/":
                self._send(200, "text/html; charset=utf-8", PAGE.read_bytes())
            elif path.startswith("/analytics-next/bundles/") and path.rsplit("/", 1)[1] in bundles:
                self._send(200, "application/javascript", bundles[path.rsplit("/", 1)[1]].read_bytes())
            else:
                self._send(404, "text/plain", b"not found")
            record.append((path, self._status))

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self._status = status
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
            pass

    return Handler


@pytest.fixture
def page_server(analytics_next):
    served: list[tuple[str, int]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _page_handler(served))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield PageServer(server, served)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def chromium(playwright):
    """Headless Chromium that can reach 127.0.0.1 and localhost only."""
    # A proxy that refuses every connection (a bound port nobody listens on) takes every request
    # to another host; Chromium never proxies loopback. No host name resolves either.
    dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    dead.bind(("127.0.0.1", 0))
    args = [
        *CHROMIUM_ARGS,
        f"--proxy-server=http://127.0.0.1:{dead.getsockname()[1]}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
    ]
    options = {"executable_path": CHROMIUM} if Path(CHROMIUM).exists() else {}
    browser = playwright.chromium.launch(headless=True, args=args, **options)
    try:
        yield browser
    finally:
        browser.close()
        dead.close()


def wait_in_page(page, condition, timeout: float, what: str):
    """Wait until `condition()` holds, letting Playwright deliver its events meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(50)


STRATEGIES = {
    "standard": (None, {"identify": "/v1/i", "page": "/v1/p", "track": "/v1/t"}),
    "batching": ({"strategy": "batching", "config": {"size": 3, "timeout": 300}}, None),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_analytics_js_calls_are_stored(strategy, page_server, chromium, api_server, celery_worker):
    delivery_strategy, single_paths = STRATEGIES[strategy]
    project = ProjectFactory()
    _, key = api_key_create(project=project, name="analytics.js")
    api_host = f"127.0.0.1:{api_server.port}"
    mark = api_server.log_mark()

    context = chromium.new_context()
    page = context.new_page()
    attempted, answered, failed, page_errors = [], [], [], []
    page.on("request", lambda request: attempted.append(request))
    page.on("response", lambda response: answered.append(response))
    page.on("requestfailed", lambda request: failed.append((request.url, request.failure)))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    try:
        page.goto(page_server.url + "/")
        result = page.evaluate(
            "config => window.runAnalytics(config)",
            {"writeKey": key, "apiHost": f"{api_host}/v1", "deliveryStrategy": delivery_strategy},
        )
        message_ids = result["messageIds"]

        def api_posts():
            return [r for r in answered if r.url.startswith(api_server.url) and r.request.method == "POST"]

        def delivered() -> bool:
            ids = set()
            for response in api_posts():
                body = json.loads(response.request.post_data)
                ids.update(m["messageId"] for m in body.get("batch", [body]))
            return ids >= set(message_ids.values())

        wait_in_page(page, delivered, DELIVERY_TIMEOUT, f"analytics.js to deliver {message_ids}")
        errors = page.evaluate("window.analyticsErrors")
        posts = [(r.request, r.status, r.request.all_headers()) for r in api_posts()]
        page_origin = page.evaluate("window.location.origin")
    finally:
        context.close()

    assert result["failures"] == [] and errors == [] and page_errors == []
    assert failed == []
    assert [r.url for r in attempted if urlsplit(r.url).hostname not in LOOPBACK] == []
    assert sorted(set(page_server.served)) == [("/", 200), ("/analytics-next/bundles/index.js", 200)]

    # What analytics.js sent: text/plain JSON with the writeKey, and Basic auth with it.
    on_wire = {}
    for request, status, headers in posts:
        body = json.loads(request.post_data)
        assert headers["content-type"] == "text/plain"
        assert headers["authorization"] == "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        assert body["writeKey"] == key
        for message in body.get("batch", [body]):
            on_wire[message["messageId"]] = (urlsplit(request.url).path, status, message)
    assert sorted(on_wire) == sorted(message_ids.values())
    for kind, message_id in message_ids.items():
        path, status, message = on_wire[message_id]
        assert message["type"] == kind
        if single_paths:
            assert (path, status) == (single_paths[kind], 202)
        else:
            assert (path, status) == ("/v1/b", 200)

    # What the API answered (its access log, written just after each answer): a real CORS
    # preflight before each path, then the POSTs.
    post_paths = sorted({path for path, _, _ in on_wire.values()})

    def api_answered_preflights_and_posts():
        log = [(r.method, r.path, r.status, r.origin, r.content_type) for r in api_server.requests(since=mark)]
        for path in post_paths:
            preflight = ("OPTIONS", path, 204, page_origin, "")
            post = ("POST", path, 202 if single_paths else 200, page_origin, "text/plain")
            assert preflight in log and post in log, log
            assert log.index(preflight) < log.index(post), log
        assert len([entry for entry in log if entry[0] == "POST"]) == len(posts), log
        assert {entry[2] for entry in log} <= {200, 202, 204}, log
        return True

    wait_for(api_answered_preflights_and_posts, timeout=5)

    celery_worker.wait_processed(project.pk)

    customer = Customer.objects.get(project=project, external_id="user_js")
    assert customer.traits == {"plan": "pro"}
    assert set(Identity.objects.filter(project=project).values_list("kind", "value", "customer_id")) == {
        ("customer_id", "user_js", customer.pk),
        ("anonymous_id", result["anonymousId"], customer.pk),
    }
    events = {event.message_id: event for event in Event.objects.filter(project=project)}
    assert sorted(events) == sorted(message_ids.values())
    identify, page_view, track = (events[message_ids[kind]] for kind in ("identify", "page", "track"))
    assert (identify.type, identify.name, identify.properties) == ("identify", "", {"plan": "pro"})
    assert (track.type, track.name, track.properties) == ("track", "purchase", {"amount": 5})
    assert (page_view.type, page_view.name) == ("page", "Pricing")
    assert page_view.properties["url"] == page_server.url + "/"
    assert page_view.properties["name"] == "Pricing"
    for event in events.values():
        assert event.customer_id == customer.pk
        assert event.context["library"]["name"] == "analytics.js"
        assert event.context["page"]["url"] == page_server.url + "/"
        assert "HeadlessChrome" in event.context["userAgent"]


def test_a_retried_call_passes_the_cors_preflight(page_server, chromium, api_server, celery_worker):
    """analytics.js adds `X-Retry-Count` to a call it retries (after a network error or a 5xx), so the
    API's preflight must allow that header too, or every retry is blocked by the browser. The page
    posts exactly what analytics.js's retry posts, since the real API cannot be made to fail here."""
    project = ProjectFactory()
    _, key = api_key_create(project=project, name="analytics.js")
    context = chromium.new_context()
    page = context.new_page()
    try:
        page.goto(page_server.url + "/")
        outcome = page.evaluate(
            """async ({url, writeKey}) => {
                const body = {type: "track", event: "retried", userId: "user_retry", properties: {}, writeKey,
                              messageId: "retry-1", sentAt: new Date().toISOString()};
                try {
                    const response = await fetch(url, {
                        method: "post",
                        headers: {"Content-Type": "text/plain", "Authorization": "Basic " + btoa(writeKey + ":"),
                                  "X-Retry-Count": "1"},
                        body: JSON.stringify(body),
                    });
                    return response.status;
                } catch (error) {
                    return String(error);
                }
            }""",
            {"url": f"{api_server.url}/v1/t", "writeKey": key},
        )
    finally:
        context.close()
    assert outcome == 202
    celery_worker.wait_processed(project.pk)
    assert Event.objects.get(project=project, message_id="retry-1").name == "retried"
