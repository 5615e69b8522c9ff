"""HTTP plumbing of the CDP API: the error shape, body reading, key extraction, CORS (sending endpoints only).

Every error the API returns has one shape, documented in `cdp/openapi.yaml`:

    {"error": "bad_request", "code": "bad_request", "message": "customer_id: exceeds maximum …"}

`code` repeats `error` because the Segment-family SDKs read `code`.
"""

import base64
import zlib

import orjson
from django.http import HttpRequest, HttpResponse

ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}
# text/plain: analytics.js's beacons (no CORS preflight). application/x-www-form-urlencoded: what
# axios labels a Buffer, so @rudderstack/rudder-sdk-node 3.x sends its gzipped JSON under it (as
# RudderStack's own server, we read the body as JSON whatever the label; a form body is not JSON).
ACCEPTED_CONTENT_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded")
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding, X-Requested-With, X-Retry-Count",
    "Access-Control-Expose-Headers": "Retry-After",
    "Access-Control-Max-Age": "86400",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def json_response(data, status: int = 200, headers: dict | None = None) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def error_response(status: int, message: str, *, retry_after: int | None = None) -> HttpResponse:
    name = ERROR_NAMES.get(status, "error")
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response({"error": name, "code": name, "message": message}, status=status, headers=headers)


def read_json_body(request: HttpRequest, *, limit: int):
    """The request's JSON body, bounded in size before and after gzip; raises ApiError."""
    content_type = request.content_type or ""
    if content_type not in ACCEPTED_CONTENT_TYPES:
        raise ApiError(
            415,
            "Content-Type must be application/json (or text/plain or application/x-www-form-urlencoded carrying JSON)",
        )
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, f"body exceeds {limit // 1024} KB")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise ApiError(413, f"body exceeds {limit // 1024} KB")
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            # Inflate at most limit+1 bytes: a gzip bomb is refused without being inflated whole.
            body = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise ApiError(400, "body: not valid gzip") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise ApiError(413, f"body exceeds {limit // 1024} KB once inflated")
    elif encoding not in ("", "identity"):
        raise ApiError(415, f"Content-Encoding {encoding!r} is not supported (use gzip)")
    if not body:
        raise ApiError(400, "body: is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body: not valid JSON ({exc})") from None


def reject_nul(request: HttpRequest) -> None:
    """PostgreSQL cannot compare text with a NUL character: refuse it before any query does."""
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.GET.items()):
        raise ApiError(400, "query: contains a NUL character")


def credentials(request: HttpRequest, body=None) -> str | None:
    """The API key of a request: Bearer, Basic (key as username), Token (Traitly) or writeKey."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme in ("bearer", "token") and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    if isinstance(body, dict):
        key = body.get("writeKey") or body.get("write_key")
        if isinstance(key, str):
            return key
    return None


def sends_calls(view, *methods: str):
    """Mark `methods` of a view as callable by web pages on any origin (CORS): the sending endpoints,
    which analytics.js calls with the write key of the page's source."""
    view.cors_methods = frozenset(methods)
    return view


class CorsMiddleware:
    """Lets web pages on any origin call the sending endpoints (keys are never cookies, so `*` is safe).

    Every other endpoint (reads, erasure, segments, workflows) answers no CORS headers and no
    preflight: it needs a secret key, which belongs on a server, and a browser that cannot call it
    cross-origin keeps a secret key pasted into a web page from working there.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if getattr(request, "cors_allowed", False):
            for name, value in CORS_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    def process_view(self, request: HttpRequest, view, view_args, view_kwargs) -> HttpResponse | None:
        methods = getattr(view, "cors_methods", frozenset())
        if request.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in request.META:
            if request.META["HTTP_ACCESS_CONTROL_REQUEST_METHOD"].upper() in methods:
                request.cors_allowed = True
                return HttpResponse(status=204)
            return None  # the view answers 405: no preflight succeeds
        request.cors_allowed = request.method in methods
        return None
