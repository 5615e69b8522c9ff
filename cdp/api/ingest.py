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
from organizations.api_keys import (
    GENERATION_KEY,
    api_key_allows,
    api_key_authenticate,
    api_key_remembered,
    generation_parse,
)
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
    return _authenticate(request, body, scope=scope, limited=False)


def authorize(request: HttpRequest, body=None, *, scope: str = ApiKey.Scope.WRITE) -> ApiKey:
    """authenticate() then rate_limit(), in one Redis round trip when this process remembers the
    key: the bucket's token is taken and the keys' revocation generation read by one script."""
    return _authenticate(request, body, scope=scope, limited=True)


def _authenticate(request: HttpRequest, body, *, scope: str, limited: bool) -> ApiKey:
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
    decision = generation = None
    remembered = api_key_remembered(key) if limited else None
    if remembered is not None:
        # Its project's rate, as remembered, for the token taken before the key is checked: a
        # rate changed meanwhile bumps the generation, so the next request takes the new one.
        decision = _take(remembered, read=GENERATION_KEY)
        if decision.read_done:
            generation = generation_parse(decision.read)
    try:
        api_key = api_key_authenticate(key, generation=generation)
    except DatabaseError:
        raise ApiError(503, "the key store is unavailable; retry later", retry_after=DATABASE_RETRY_AFTER) from None
    if api_key is None:
        ratelimit.bad_key_record(address)
        raise ApiError(401, "invalid or revoked API key")
    if not api_key_allows(api_key, scope):
        raise ApiError(403, "authorization: this endpoint needs a secret key; a write key can only send calls")
    if limited:
        _refuse_over_rate(api_key, decision if decision is not None else _take(api_key))
    return api_key


def _rate(api_key: ApiKey) -> int:
    return api_key.project.ingest_rate_limit or settings.API_RATE_LIMIT


def _take(api_key: ApiKey, *, read: str | None = None) -> ratelimit.Decision:
    rate = _rate(api_key)
    return ratelimit.take(api_key.prefix, rate=rate, burst=rate * settings.API_RATE_BURST_SECONDS, read=read)


def _refuse_over_rate(api_key: ApiKey, decision: ratelimit.Decision) -> None:
    if not decision.allowed:
        raise ApiError(
            429, f"rate limit of {_rate(api_key)} requests per second exceeded", retry_after=decision.retry_after
        )


def rate_limit(api_key: ApiKey) -> None:
    _refuse_over_rate(api_key, _take(api_key))


def enqueue(project_id: int, messages: list[dict], received_at) -> str:
    """Store the request's calls; the answer's command_id names them all, though calls of customers
    in different partitions of the project are stored (and applied) as one command per partition."""
    try:
        return str(inbox.commands_enqueue(project_id=project_id, messages=messages, received_at=received_at))
    except DatabaseError:
        raise ApiError(503, "the event store is unavailable; retry later", retry_after=DATABASE_RETRY_AFTER) from None


def authenticated_body(request: HttpRequest, *, limit: int):
    """Authorize (authenticate and rate-limit) and read the body. With an Authorization header the
    key is checked first, so a bad key costs no parsing; otherwise the key can only come from the
    body (`writeKey`)."""
    if request.META.get("HTTP_AUTHORIZATION"):
        api_key = authorize(request)
        return api_key, read_json_body(request, limit=limit)
    body = read_json_body(request, limit=limit)
    return authorize(request, body), body


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
    try:
        messages = normalize_batch(body, received_at=received_at, max_items=BATCH_MAX_ITEMS)
    except MessageError as exc:
        raise ApiError(400, str(exc)) from None
    command_id = enqueue(api_key.project_id, messages, received_at)
    # 200, not 202: customerio-cdp-analytics and rudder-sdk-python resend anything else.
    return json_response({"success": True, "command_id": command_id, "accepted": len(messages)}, status=200)


batch = api_view(_batch)
