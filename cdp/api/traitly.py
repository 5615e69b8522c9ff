"""The Traitly API (`docs/traitly-api-reference.md`), for customers migrating from it.

Same keys (`Authorization: Token <key>`), same pipeline: a Traitly customer is an identify, a
Traitly event a track. Answers use Traitly's envelope: `data`, `metadata`, `created`/`retrieved`
(UNIX seconds as strings) and `object`.
"""

from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from organizations.models import ApiKey
from timonier import clock

from .. import selectors
from ..messages import MessageError, normalize
from ..models import Customer
from .http import ApiError, error_response, json_response, read_json_body, reject_nul, sends_calls
from .ingest import SINGLE_BODY_LIMIT, authenticate, enqueue, rate_limit

NAMED_FIELDS = ("name", "email", "plan", "monthly_payment_amount", "location", "phone_number", "organisation_id")
REQUIRED_CUSTOMER_FIELDS = ("customer_id", "name", "email", "plan")
LIST_LIMIT = 100


def _unix(value: datetime) -> str:
    return str(int(value.timestamp()))


def _created_at(body: dict, now: datetime) -> datetime:
    raw = body.get("created_at")
    if raw is None or raw == "":
        return now
    try:
        seconds = int(raw)
    except (TypeError, ValueError):
        raise ApiError(400, "created_at: must be a UNIX timestamp in seconds") from None
    if not 0 <= seconds < 253402300800:
        raise ApiError(400, "created_at: out of range")
    return datetime.fromtimestamp(seconds, tz=UTC)


def _envelope(kind: str, stamp: str, data: list) -> dict:
    return {"data": data, "metadata": {}, stamp: _unix(clock.now()), "object": kind}


def _customer_json(customer: Customer) -> dict:
    traits = dict(customer.traits)
    created = traits.pop("created_at", None)
    data = {"customer_id": customer.external_id}
    for name in NAMED_FIELDS:
        data[name] = traits.pop(name, None)
    data["created_at"] = str(created) if isinstance(created, int) else _unix(customer.created_at)
    data["custom_attributes"] = traits
    return data


def traitly_view(handler):
    """GET reads (a secret key); POST sends (any key, from any origin: CORS)."""

    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "POST"):
            response = error_response(405, f"{request.method} is not allowed here; use GET or POST")
            response["Allow"] = "GET, POST, OPTIONS"
            return response
        try:
            reject_nul(request)
            scope = ApiKey.Scope.SECRET if request.method == "GET" else ApiKey.Scope.WRITE
            api_key = authenticate(request, scope=scope)
            rate_limit(api_key)
            return handler(request, api_key.project)
        except ApiError as exc:
            return error_response(exc.status, exc.message, retry_after=exc.retry_after)

    view.__name__ = handler.__name__
    return sends_calls(view, "POST")


@traitly_view
def customer(request: HttpRequest, project) -> HttpResponse:
    if request.method == "GET":
        customers, _ = selectors.customers_page(
            project,
            limit=LIST_LIMIT,
            traits={k: request.GET[k] for k in ("name", "plan") if request.GET.get(k)},
            external_id=request.GET.get("customer_id") or None,
        )
        return json_response(_envelope("customer", "retrieved", [_customer_json(c) for c in customers]))

    now = clock.now()
    body = read_json_body(request, limit=SINGLE_BODY_LIMIT)
    if not isinstance(body, dict):
        raise ApiError(400, "body: must be a JSON object")
    for name in REQUIRED_CUSTOMER_FIELDS:
        if body.get(name) in (None, ""):
            raise ApiError(400, f"{name}: is required")
    custom = body.get("custom_attributes") or {}
    if not isinstance(custom, dict):
        raise ApiError(400, "custom_attributes: must be an object")
    created_at = _created_at(body, now)
    traits = {**custom, **{name: body[name] for name in NAMED_FIELDS if name in body}}
    traits["created_at"] = int(created_at.timestamp())
    try:
        message = normalize(
            {"customer_id": body["customer_id"], "traits": traits}, received_at=now, default_type="identify"
        )
    except MessageError as exc:
        raise ApiError(400, str(exc)) from None
    enqueue(project.pk, [message], now)
    echoed = {"customer_id": message["customer_id"], **{name: body.get(name) for name in NAMED_FIELDS}}
    echoed.update(created_at=_unix(created_at), custom_attributes=custom)
    return json_response(_envelope("customer", "created", [echoed]))


@traitly_view
def event(request: HttpRequest, project) -> HttpResponse:
    if request.method == "GET":
        customer_id = request.GET.get("customer_id")
        found = selectors.customer_by_id(project, customer_id) if customer_id else None
        if customer_id and found is None:
            return json_response(_envelope("event", "retrieved", []))
        events = selectors.events_page(
            project, limit=LIST_LIMIT, customer=found, name=request.GET.get("name") or None, type="track"
        )
        data = [
            {"customer_id": e.customer.external_id, "name": e.name, "created_at": _unix(e.timestamp), "success": 1}
            for e in events
        ]
        return json_response(_envelope("event", "retrieved", data))

    now = clock.now()
    body = read_json_body(request, limit=SINGLE_BODY_LIMIT)
    if not isinstance(body, dict):
        raise ApiError(400, "body: must be a JSON object")
    for name in ("customer_id", "name"):
        if body.get(name) in (None, ""):
            raise ApiError(400, f"{name}: is required")
    created_at = _created_at(body, now)
    properties = {k: v for k, v in body.items() if k not in ("customer_id", "name", "created_at")}
    try:
        message = normalize(
            {
                "customer_id": body["customer_id"],
                "event": body["name"],
                "properties": properties,
                "timestamp": created_at.isoformat(),
            },
            received_at=now,
            default_type="track",
        )
    except MessageError as exc:
        message = str(exc).replace("event:", "name:", 1).replace("timestamp:", "created_at:", 1)
        raise ApiError(400, message) from None
    enqueue(project.pk, [message], now)
    data = [
        {"customer_id": message["customer_id"], "name": message["event"], "created_at": _unix(created_at), "success": 1}
    ]
    return json_response(_envelope("event", "created", data))
