"""Read endpoints of customers and their events, and the right-to-erasure call."""

from django.http import HttpRequest, HttpResponse

from timonier import clock
from timonier.api.views import iso, page_limit, read_view

from .. import selectors
from ..messages import CUSTOMER_ID_RE, erasure_message
from ..models import Customer, Event
from .http import ApiError, json_response
from .ingest import enqueue

RESERVED_PARAMS = {"limit", "cursor", "search", "segment"}
# Segment ids are PostgreSQL bigints: a larger number cannot be any segment's.
MAX_SEGMENT_ID = 2**63 - 1


def customer_json(customer: Customer, *, full: bool = False) -> dict:
    data = {
        "customer_id": customer.external_id,
        "traits": customer.traits,
        "first_seen_at": iso(customer.first_seen_at),
        "last_seen_at": iso(customer.last_seen_at),
        "created_at": iso(customer.created_at),
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
        "timestamp": iso(event.timestamp),
        "received_at": iso(event.received_at),
        "message_id": event.message_id,
    }


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
        limit=page_limit(request),
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


def customer_or_404(project, customer_id: str) -> Customer:
    """The project's customer by its external id, or the API's 404 naming customer_id (also for workflows' runs)."""
    customer = selectors.customer_by_id(project, customer_id)
    if customer is None:
        raise ApiError(404, f"customer_id: no customer {customer_id!r} in this project")
    return customer


@read_view(("GET", "DELETE"))
def customer_detail(request: HttpRequest, project, customer_id: str) -> HttpResponse:
    if request.method == "DELETE":
        return _customer_erase(project, customer_id)
    return json_response(customer_json(customer_or_404(project, customer_id), full=True))


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
    customer = customer_or_404(project, customer_id)
    events, next_cursor = selectors.customer_events_page(
        project, customer, limit=page_limit(request), cursor=request.GET.get("cursor"), name=request.GET.get("event")
    )
    return json_response({"events": [event_json(e) for e in events], "next_cursor": next_cursor})
