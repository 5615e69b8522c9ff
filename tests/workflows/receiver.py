"""A real HTTP receiver on 127.0.0.1 for tests of webhooks: records requests, answers as scripted.

    with Receiver() as receiver:
        receiver.reply(Reply(503, headers={"Retry-After": "30"}), Reply(200, body=b'{"ok": true}'))
        ...  # send to receiver.url("/hook")
        [first, second] = receiver.wait_for(2)

Replies are taken in order, one per request; when none is left, the default (200, empty) answers.
A reply's `delay` holds the answer back (a slow receiver); stopping the receiver ends every delay at
once, so a test never waits for one. Bounded: at most `max_requests` requests are recorded and
answered (later ones get 503), bodies over 1 MB are refused with 413, delays are capped at 30 s.
`Receiver(tls=context)` serves HTTPS with the context's certificate and records the SNI names.

`allowed_receiver(settings)` starts one and adds it to `settings.WEBHOOK_ALLOWED_HOSTS`, the
operator setting that lets webhooks reach 127.0.0.1 (the SSRF check refuses loopback otherwise).
"""

import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1024 * 1024
MAX_DELAY = 30.0


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds before answering
    # Send the body a piece at a time, `drip` seconds apart (a receiver trickling its answer).
    drip: float = 0.0


@dataclass
class ReceivedRequest:
    method: str
    path: str  # with the query
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


class Receiver:
    def __init__(self, *, max_requests: int = 100, default: Reply | None = None, tls: ssl.SSLContext | None = None):
        self.max_requests = max_requests
        self.default = default or Reply()
        self.tls = tls
        self.requests: list[ReceivedRequest] = []
        self.server_names: list[str | None] = []  # the TLS server name (SNI) of each handshake
        self._replies: deque[Reply] = deque()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Receiver":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        if self.tls is not None:
            self.tls.sni_callback = lambda sock, name, context: self.server_names.append(name)
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        assert self._server is not None, "use the receiver as a context manager"
        return self._server.server_address[1]

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str = "/hook") -> str:
        return f"{'https' if self.tls else 'http'}://{self.netloc}{path}"

    # -- scripting and reading ---------------------------------------------------------------
    def reply(self, *replies: Reply) -> None:
        with self._cond:
            self._replies.extend(replies)

    def paths(self) -> list[str]:
        with self._cond:
            return [request.path for request in self.requests]

    def wait_for(self, count: int = 1, *, timeout: float = 10.0) -> list[ReceivedRequest]:
        """The first `count` requests, waiting for them up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(self.requests)} request(s) within {timeout}s, expected {count}")
                self._cond.wait(remaining)
            return list(self.requests[:count])

    def _record(self, request: ReceivedRequest) -> Reply | None:
        with self._cond:
            if len(self.requests) >= self.max_requests:
                return None
            self.requests.append(request)
            self._cond.notify_all()
            return self._replies.popleft() if self._replies else self.default

    def _handler_class(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    self.close_connection = True  # the client gave up (a timeout test): nothing to answer

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._answer(Reply(413), body_allowed=True)
                    return
                body = self.rfile.read(length) if length else b""
                request = ReceivedRequest(
                    method=self.command,
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body,
                )
                reply = receiver._record(request)
                if reply is None:
                    self._answer(Reply(503), body_allowed=True)
                    return
                if reply.delay and receiver._stopping.wait(min(reply.delay, MAX_DELAY)):
                    self.close_connection = True
                    return
                self._answer(reply, body_allowed=self.command != "HEAD")

            def _answer(self, reply: Reply, *, body_allowed: bool):
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if body_allowed and reply.body:
                    if reply.drip:
                        for i in range(0, len(reply.body), 16):
                            if receiver._stopping.wait(reply.drip):
                                break
                            self.wfile.write(reply.body[i : i + 16])
                            self.wfile.flush()
                    else:
                        self.wfile.write(reply.body)
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve  # noqa: N815

            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

        return Handler


@contextmanager
def allowed_receiver(settings) -> Iterator[Receiver]:
    """A receiver on an address webhooks may reach: added to WEBHOOK_ALLOWED_HOSTS (the `settings` fixture).

    A test module makes it its fixture:

        @pytest.fixture
        def webhook_receiver(settings):
            with allowed_receiver(settings) as receiver:
                yield receiver
    """
    with Receiver() as receiver:
        settings.WEBHOOK_ALLOWED_HOSTS = [*settings.WEBHOOK_ALLOWED_HOSTS, receiver.netloc]
        yield receiver
