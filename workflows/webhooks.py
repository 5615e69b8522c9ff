"""One webhook request: signed per Standard Webhooks, sent to the checked address, classified.

The executor calls `webhook_send` once per WebhookAttempt and decides from the result whether to
try again (`retryable`, after `retry_delay`) until `MAX_ATTEMPTS`, or to take the step's failure
path. Nothing here touches the database, so the executor keeps its claim and its records in its
own transactions.

- Signing (https://www.standardwebhooks.com): `webhook-id` (the same for every attempt of one
  step of one run, so receivers deduplicate retries), `webhook-timestamp` (Unix seconds, from
  `timonier.clock`) and `webhook-signature`, one `v1,<base64 HMAC-SHA256>` of
  `"{id}.{timestamp}.{body}"` per secret: during a rotation both the new and the previous secret
  sign, so a receiver holding either verifies.
- Where it goes: `addresses.resolve_target` resolves the host once and checks every address; the
  connection is opened to that address with the URL's host in the Host header and, for https, as
  the TLS server name and the name the certificate must carry. There is no second lookup for a
  rebinding DNS server to answer differently, and redirects are never followed (a 3xx could
  point anywhere, the checked address is only the first hop).
- Bounds: one total timeout per attempt (`WEBHOOK_TIMEOUT_SECONDS`), at most 1 MB of the answer
  read and 64 KB of it kept, no retries inside an attempt (the executor's retries are rows).
"""

import base64
import hashlib
import hmac
import random
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from http.client import HTTPException

from django.conf import settings
from urllib3 import BaseHTTPResponse
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError, NewConnectionError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.ssl_match_hostname import CertificateError as HostnameMismatch

from timonier import clock

from .addresses import Target, UnresolvableHost, UnsafeUrl, resolve_target

USER_AGENT = "Timonier-Webhooks/1"
SECRET_PREFIX = "whsec_"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
KEEP_BYTES = 64 * 1024
READ_AT_MOST = 1024 * 1024
RETRY_AFTER_CAP = timedelta(hours=1)
BACKOFF_BASE = timedelta(seconds=10)
BACKOFF_CAP = timedelta(hours=1)

# Headers the request sets itself: an author's own would break the framing (Content-Length,
# Transfer-Encoding, Connection), point the Host elsewhere than the checked URL, or forge the
# signature.
_OWN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00\r\n]")


def __getattr__(name: str):
    # `webhooks.MAX_ATTEMPTS` follows the setting (tests change it with the `settings` fixture).
    if name == "MAX_ATTEMPTS":
        return settings.WEBHOOK_MAX_ATTEMPTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sign(*, secrets: list[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,<base64>` per secret, space-separated."""
    if not secrets:
        raise ValueError("a webhook needs at least one signing secret")
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signatures = []
    for secret in secrets:
        digest = hmac.new(_secret_key(secret), signed, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode("ascii"))
    return " ".join(signatures)


def _secret_key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook signing secret starts with whsec_")
    key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    if not key:
        raise ValueError("a webhook signing secret may not be empty")
    return key


@dataclass
class WebhookResult:
    status: int | None  # None when there was no answer (timeout, refused, unsafe URL)
    latency_ms: int
    body: str  # the first 64 KB of the answer
    error: str  # "" when ok
    retryable: bool
    retry_after: float | None = None  # seconds the receiver asked for, capped at 1 hour

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status <= 299


def webhook_send(
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    webhook_id: str,
    secrets: list[str],
    timeout: float | None = None,
    now: datetime | None = None,
    resolver=socket.getaddrinfo,
) -> WebhookResult:
    """Send one signed request and say how it went; never raises for what the network or URL did."""
    started = time.monotonic()

    def failed(error: str, *, retryable: bool) -> WebhookResult:
        return WebhookResult(status=None, latency_ms=_ms_since(started), body="", error=error, retryable=retryable)

    method = (method or "").upper()
    if method not in METHODS:
        return failed(f"method: must be one of {', '.join(METHODS)}", retryable=False)
    try:
        target = resolve_target(url, resolver=resolver)
    except UnresolvableHost as exc:
        return failed(str(exc), retryable=True)  # DNS may answer again
    except UnsafeUrl as exc:
        return failed(str(exc), retryable=False)
    try:
        request_headers = _request_headers(headers, body=body, target=target)
    except ValueError as exc:
        return failed(str(exc), retryable=False)
    instant = now or clock.now()
    timestamp = int(instant.timestamp())
    request_headers["webhook-id"] = webhook_id
    request_headers["webhook-timestamp"] = str(timestamp)
    request_headers["webhook-signature"] = sign(secrets=secrets, webhook_id=webhook_id, timestamp=timestamp, body=body)

    total = float(settings.WEBHOOK_TIMEOUT_SECONDS if timeout is None else timeout)
    conn = _connection(target, total)
    watchdog = _Watchdog(conn, total)
    try:
        conn.request(method, target.path, body=body or None, headers=request_headers, preload_content=False)
        watchdog.watch(conn.sock)
        response = conn.getresponse()
        kept = _read_bounded(response)
    except Exception as exc:  # every way the network can fail; classified below, never raised
        if watchdog.expired:
            return failed(f"timed out after {total:g} s", retryable=True)
        # Before the timeouts: urllib3's NewConnectionError is a subclass of its ConnectTimeoutError.
        if isinstance(exc, NewConnectionError | ConnectionRefusedError):
            return failed(f"could not connect to {target.address}: {_reason(exc)}", retryable=True)
        if isinstance(exc, TimeoutError | Urllib3Timeout):
            return failed(f"timed out after {total:g} s", retryable=True)
        if isinstance(exc, ssl.SSLError | ssl.CertificateError | SSLError | HostnameMismatch):
            # A certificate that does not verify is a configuration to fix, not a moment to wait out.
            return failed(f"TLS: {_reason(exc)}", retryable=False)
        if isinstance(exc, OSError | HTTPException | HTTPError):
            return failed(f"connection error: {_reason(exc)}", retryable=True)
        raise
    finally:
        watchdog.cancel()
        conn.close()

    return _classify(response, kept, started=started, now=instant)


def _request_headers(headers: dict[str, str], *, body: bytes, target: Target) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        name, value = str(name), str(value)
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"headers: {name!r} is not a valid header name")
        if _HEADER_VALUE_FORBIDDEN.search(value):
            raise ValueError(f"headers: the value of {name} contains a line break")
        if name.lower() not in _OWN_HEADERS:
            out[name] = value
    out["Host"] = target.host_header
    out["User-Agent"] = USER_AGENT
    if body and not any(name.lower() == "content-type" for name in out):
        out["Content-Type"] = "application/json"
    return out


def _connection(target: Target, total: float) -> HTTPConnection:
    # A connection of its own, not a pool: one request per attempt, and the watchdog needs the socket.
    if target.scheme == "https":
        # The socket goes to the checked address; SNI and certificate verification use the name.
        return HTTPSConnection(
            target.address,
            target.port,
            timeout=total,
            cert_reqs="CERT_REQUIRED",
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    return HTTPConnection(target.address, target.port, timeout=total)


class _Watchdog:
    """Ends an attempt at its deadline, however the receiver trickles its answer.

    Socket timeouts apply to each read: a server sending a byte every few seconds would otherwise
    hold a worker for hours. At the deadline the socket is shut down, which wakes a blocked read.
    """

    def __init__(self, conn: HTTPConnection, seconds: float):
        self.conn = conn
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket | None) -> None:
        """The connected socket, kept: the connection lets go of it once an answer says `close`."""
        with self._lock:
            self._sock = sock
            expired = self.expired
        if expired:
            self._shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            # Before `watch`: the request is still being sent, on the connection's own socket.
            sock = self._sock or self.conn.sock
        self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket | None) -> None:
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def cancel(self) -> None:
        self._timer.cancel()


def _read_bounded(response: BaseHTTPResponse) -> bytes:
    """Up to READ_AT_MOST bytes of the body, the first KEEP_BYTES of them kept."""
    kept = bytearray()
    read = 0
    while read < READ_AT_MOST:
        chunk = response.read(min(64 * 1024, READ_AT_MOST - read))
        if not chunk:
            break
        read += len(chunk)
        if len(kept) < KEEP_BYTES:
            kept += chunk[: KEEP_BYTES - len(kept)]
    return bytes(kept)


def _classify(response: BaseHTTPResponse, kept: bytes, *, started: float, now: datetime) -> WebhookResult:
    status = response.status
    result = WebhookResult(
        status=status,
        latency_ms=_ms_since(started),
        body=kept.decode("utf-8", errors="replace"),
        error="",
        retryable=False,
    )
    if 200 <= status <= 299:
        return result
    result.error = f"HTTP {status}" + (f" {_phrase(status)}" if _phrase(status) else "")
    if 300 <= status <= 399:
        location = response.headers.get("Location", "")[:200]
        result.error += " not followed: webhooks never follow redirects" + (f" (to {location})" if location else "")
    elif status == 429 or status >= 500:
        result.retryable = True
        result.retry_after = parse_retry_after(response.headers.get("Retry-After"), now=now)
    return result


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP-date), capped at one hour."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,12}", value):  # str.isdigit would take "²", which float() refuses
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # HTTP-dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_CAP.total_seconds())


def retry_delay(attempt: int, retry_after: float | None, *, rng: random.Random | None = None) -> timedelta:
    """How long to wait after failed attempt number `attempt` (1 = the first) before the next.

    Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
    Jitter"): uniform between 0 and 10 s * 2**(attempt-1), capped at one hour, so receivers that
    came back up are not hit by every run at once; never sooner than the receiver's Retry-After.
    """
    exponent = min(max(attempt, 1) - 1, 20)  # 2**20 * 10 s is far past the cap already
    ceiling = min(BACKOFF_BASE * 2**exponent, BACKOFF_CAP)
    delay = timedelta(seconds=(rng or random).uniform(0, ceiling.total_seconds()))
    if retry_after is not None:
        delay = max(delay, min(timedelta(seconds=max(retry_after, 0)), RETRY_AFTER_CAP))
    return delay


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _reason(exc: BaseException) -> str:
    # urllib3 wraps the OS error; its own message repeats the connection object's repr.
    reason = getattr(exc, "reason", None) or exc.__context__ or exc
    if isinstance(reason, ConnectionRefusedError) or "Connection refused" in str(reason):
        return "connection refused"
    return str(reason) or type(reason).__name__


def _ms_since(started: float) -> int:
    return max(int((time.monotonic() - started) * 1000), 0)
