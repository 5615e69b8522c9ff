"""Read endpoints of customers and their events, and the right-to-erasure call."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from organizations.models import ApiKey
from timonier import clock

from .. import selectors
from ..messages import CUSTOMER_ID_RE, erasure_message
from ..models import Customer, Event
from .http import ApiError, error_response, json_response, reject_nul
from .ingest import authenticate, enqueue, rate_limit

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
RESERVED_PARAMS = {"limit", "cursor", "search", "segment"}
# Segment ids are PostgreSQL bigints: a larger number cannot be any segment's.
MAX_SEGMENT_ID = 2**63 - 1


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def customer_json(customer: Customer, *, full: bool = False) -> dict:
    data = {
        "customer_id": customer.external_id,
        "traits": customer.traits,
        "first_seen_at": _iso(customer.first_seen_at),
        "last_seen_at": _iso(customer.last_seen_at),
        "created_at": _iso(customer.created_at),
    }
    if full:
        data["identities"] = [{"type": i.kind, "value": i.value} for i in selectors.customer_identities(customer)]
    return data


def event_json(event: Event) -> dict:
    return {
        "id": event.pk,
        "type": event.type,
        "event": event.name,
        "properties": event.properties,
        "context": event.context,
        "timestamp": _iso(event.timestamp),
        "received_at": _iso(event.received_at),
        "message_id": event.message_id,
    }


def _limit(request: HttpRequest) -> int:
    raw = request.GET.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, f"limit: must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def read_view(methods: tuple[str, ...], *, scope: str = ApiKey.Scope.SECRET):
    """A read or management endpoint: `methods` only, a key of `scope` (secret unless said
    otherwise, so every new endpoint on it is closed to public write keys), the key's rate limit
    and the error shape. No CORS (see `CorsMiddleware`). The handler gets the key's project."""

    def decorator(handler):
        @csrf_exempt
        def view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                response = error_response(405, f"{request.method} is not allowed here")
                response["Allow"] = ", ".join((*methods, "OPTIONS"))
                return response
            try:
                reject_nul(request)
                api_key = authenticate(request, scope=scope)
                rate_limit(api_key)
                return handler(request, api_key.project, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.message, retry_after=exc.retry_after)
            except selectors.BadCursor as exc:
                return error_response(400, str(exc))

        view.__name__ = handler.__name__
        return view

    return decorator


@read_view(("GET",))
def customers_list(request: HttpRequest, project) -> HttpResponse:
    traits = {}
    for name, value in request.GET.items():
        if name in RESERVED_PARAMS:
            continue
        if not name.startswith("traits.") or len(name) == len("traits."):
            raise ApiError(400, f"{name}: unknown parameter; filter on a trait with traits.<name>=<value>")
        traits[name.removeprefix("traits.")] = value
    segment_id = _segment_id(project, request.GET.get("segment"))
    customers, next_cursor = selectors.customers_page(
        project,
        limit=_limit(request),
        cursor=request.GET.get("cursor"),
        traits=traits,
        search=request.GET.get("search"),
        segment_id=segment_id,
    )
    return json_response({"customers": [customer_json(c) for c in customers], "next_cursor": next_cursor})


def _segment_id(project, raw: str | None) -> int | None:
    """The `segment` filter: the id of one of the project's segments, else 400 or 404."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_SEGMENT_ID:
        raise ApiError(400, "segment: must be a segment's id (a positive integer)")
    if not selectors.segment_exists(project, int(raw)):
        raise ApiError(404, f"segment: no segment {int(raw)} in this project")
    return int(raw)


def _customer_or_404(project, customer_id: str) -> Customer:
    customer = selectors.customer_by_id(project, customer_id)
    if customer is None:
        raise ApiError(404, f"customer_id: no customer {customer_id!r} in this project")
    return customer


@read_view(("GET", "DELETE"))
def customer_detail(request: HttpRequest, project, customer_id: str) -> HttpResponse:
    if request.method == "DELETE":
        return _customer_erase(project, customer_id)
    return json_response(customer_json(_customer_or_404(project, customer_id), full=True))


def _customer_erase(project, customer_id: str) -> HttpResponse:
    """Erase a customer: their profile and events go, and late calls for their ids are dropped.

    Queued like every write, behind the calls already accepted, so none of those recreates them.
    """
    if len(customer_id) > 255 or not CUSTOMER_ID_RE.fullmatch(customer_id):
        raise ApiError(400, "customer_id: not a valid customer_id")
    now = clock.now()
    message = erasure_message(customer_id, at=now)
    command_id = enqueue(project.pk, [message], now)
    return json_response({"success": True, "command_id": command_id}, status=202)


@read_view(("GET",))
def customer_events(request: HttpRequest, project, customer_id: str) -> HttpResponse:
    customer = _customer_or_404(project, customer_id)
    events, next_cursor = selectors.customer_events_page(
        project, customer, limit=_limit(request), cursor=request.GET.get("cursor"), name=request.GET.get("event")
    )
    return json_response({"events": [event_json(e) for e in events], "next_cursor": next_cursor})
