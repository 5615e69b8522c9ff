"""The ingest endpoints: validate, authenticate, rate-limit, store the command, answer.

Plain Django views rather than DRF: this is the hot path, and DRF's request wrapping, content
negotiation and serializers cost about half of the throughput the ingest issue asks for. Nothing
here writes a customer or an event; see `cdp/processing.py` for that.
"""

from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.throttling import client_address  # the one reading of BEHIND_PROXY's X-Forwarded-For
from organizations.api_keys import api_key_allows, api_key_authenticate
from organizations.models import ApiKey
from timonier import clock

from .. import inbox, ratelimit
from ..messages import MessageError, normalize, normalize_batch
from .http import ApiError, credentials, error_response, json_response, read_json_body, sends_calls

SINGLE_BODY_LIMIT = 100 * 1024
BATCH_BODY_LIMIT = 500 * 1024
BATCH_MAX_ITEMS = 10_000
DATABASE_RETRY_AFTER = 5


def authenticate(request: HttpRequest, body=None, *, scope: str = ApiKey.Scope.WRITE) -> ApiKey:
    """The request's key if it may call an endpoint needing `scope` (write: any key may).

    An address that sent too many bad keys is refused before its key is even looked up."""
    address = client_address(request)
    allowance = ratelimit.bad_keys_check(address, limit=settings.API_BAD_KEY_LIMIT)
    if not allowance.allowed:
        raise ApiError(
            429,
            f"authorization: too many requests with a missing or invalid API key from {address}; "
            f"retry in {allowance.retry_after} seconds",
            retry_after=allowance.retry_after,
        )
    key = credentials(request, body)
    if not key:
        ratelimit.bad_key_record(address)
        raise ApiError(401, "missing API key: send Authorization: Bearer <key>")
    try:
        api_key = api_key_authenticate(key)
    except DatabaseError:
        raise ApiError(503, "the key store is unavailable; retry later", retry_after=DATABASE_RETRY_AFTER) from None
    if api_key is None:
        ratelimit.bad_key_record(address)
        raise ApiError(401, "invalid or revoked API key")
    if not api_key_allows(api_key, scope):
        raise ApiError(403, "authorization: this endpoint needs a secret key; a write key can only send calls")
    return api_key


def rate_limit(api_key: ApiKey) -> None:
    project = api_key.project
    rate = project.ingest_rate_limit or settings.API_RATE_LIMIT
    decision = ratelimit.take(api_key.prefix, rate=rate, burst=rate * settings.API_RATE_BURST_SECONDS)
    if not decision.allowed:
        raise ApiError(429, f"rate limit of {rate} requests per second exceeded", retry_after=decision.retry_after)


def enqueue(project_id: int, messages: list[dict], received_at) -> str:
    """Store the request's calls; the answer's command_id names them all, though calls of customers
    in different partitions of the project are stored (and applied) as one command per partition."""
    try:
        return str(inbox.commands_enqueue(project_id=project_id, messages=messages, received_at=received_at))
    except DatabaseError:
        raise ApiError(503, "the event store is unavailable; retry later", retry_after=DATABASE_RETRY_AFTER) from None


def authenticated_body(request: HttpRequest, *, limit: int):
    """Authenticate and read the body. With an Authorization header the key is checked first, so a
    bad key costs no parsing; otherwise the key can only come from the body (`writeKey`)."""
    if request.META.get("HTTP_AUTHORIZATION"):
        api_key = authenticate(request)
        return api_key, read_json_body(request, limit=limit)
    body = read_json_body(request, limit=limit)
    return authenticate(request, body), body


def api_view(handler: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Turn ApiError into the documented error shape; only POST is allowed, from any origin (CORS)."""

    @csrf_exempt
    def view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method != "POST":
            response = error_response(405, f"{request.method} is not allowed here; use POST")
            response["Allow"] = "POST, OPTIONS"
            return response
        try:
            return handler(request, *args, **kwargs)
        except ApiError as exc:
            return error_response(exc.status, exc.message, retry_after=exc.retry_after)

    view.__name__ = handler.__name__
    return sends_calls(view, "POST")


def single_call(kind: str) -> Callable[[HttpRequest], HttpResponse]:
    """The view of one call type: /v1/<kind> and its analytics.js short path."""

    def handle(request: HttpRequest) -> HttpResponse:
        received_at = clock.now()
        api_key, body = authenticated_body(request, limit=SINGLE_BODY_LIMIT)
        rate_limit(api_key)
        try:
            message = normalize(body, received_at=received_at, default_type=kind)
        except MessageError as exc:
            raise ApiError(400, str(exc)) from None
        command_id = enqueue(api_key.project_id, [message], received_at)
        return json_response({"success": True, "command_id": command_id}, status=202)

    handle.__name__ = f"ingest_{kind}"
    return api_view(handle)


def _batch(request: HttpRequest) -> HttpResponse:
    received_at = clock.now()
    api_key, body = authenticated_body(request, limit=BATCH_BODY_LIMIT)
    rate_limit(api_key)
    try:
        messages = normalize_batch(body, received_at=received_at, max_items=BATCH_MAX_ITEMS)
    except MessageError as exc:
        raise ApiError(400, str(exc)) from None
    command_id = enqueue(api_key.project_id, messages, received_at)
    # 200, not 202: customerio-cdp-analytics and rudder-sdk-python resend anything else.
    return json_response({"success": True, "command_id": command_id, "accepted": len(messages)}, status=200)


batch = api_view(_batch)
