"""Platform pages of the CDP: the customer list, a customer's profile and timeline, live events."""

import json

from django.conf import settings
from django.core.exceptions import BadRequest
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import dateformat, timezone

from organizations.scoping import project_view
from timonier.api.cursors import BadCursor

from . import dashboard, selectors
from .models import Event

CUSTOMERS_PER_PAGE = 50
EVENTS_PER_PAGE = 25


def display_value(value) -> str:
    """A trait or property value as text: strings as they are, anything else as compact JSON.

    Keys are sorted: PostgreSQL's jsonb does not keep the order they were sent in, SQLite does.
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def display_pairs(mapping: dict) -> list[tuple[str, str]]:
    return [(key, display_value(mapping[key])) for key in sorted(mapping)]


def display_context(context: dict) -> str:
    return json.dumps(context, ensure_ascii=False, indent=2, sort_keys=True) if context else ""


def _cursor(request: HttpRequest) -> str | None:
    return request.GET.get("cursor") or None


@project_view()
def customer_list(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()
    cursor = _cursor(request)
    try:
        customers, next_cursor = selectors.customers_list(
            request.project, limit=CUSTOMERS_PER_PAGE, cursor=cursor, search=search or None
        )
    except BadCursor as exc:
        raise BadRequest(str(exc)) from None
    context = {"customers": customers, "next_cursor": next_cursor, "cursor": cursor, "search": search}
    if not customers and not search and not cursor:
        context["api_url"] = settings.API_URL
    return render(request, "cdp/customer_list.html", context)


@project_view()
def customer_detail(request: HttpRequest, pk: int) -> HttpResponse:
    customer = selectors.customer_get(request.project, pk)
    if customer is None:
        raise Http404("No such customer in this project")
    name = request.GET.get("name", "").strip()
    cursor = _cursor(request)
    try:
        events, next_cursor = selectors.customer_events_page(
            request.project, customer, limit=EVENTS_PER_PAGE, cursor=cursor, name=name or None
        )
    except BadCursor as exc:
        raise BadRequest(str(exc)) from None
    context = {
        "customer": customer,
        "attributes": display_pairs(customer.traits),
        "identities": selectors.customer_identities(customer),
        "events": [(event, display_pairs(event.properties), display_context(event.context)) for event in events],
        "next_cursor": next_cursor,
        "cursor": cursor,
        "name": name,
    }
    return render(request, "cdp/customer_detail.html", context)


def event_row_json(request: HttpRequest, event: Event) -> dict:
    customer = event.customer
    return {
        "id": event.pk,
        "type": event.type,
        "name": event.name,
        "received_at": event.received_at.isoformat(),
        "received": dateformat.format(timezone.localtime(event.received_at), dashboard.RECEIVED_FORMAT),
        "customer": {
            "label": customer.external_id or "Anonymous",
            "anonymous": customer.external_id is None,
            "url": reverse("cdp:customer", args=[request.organization.slug, request.project.slug, customer.pk]),
        },
    }


@project_view()
def events_latest(request: HttpRequest) -> HttpResponse:
    """What the dashboard polls: the newest events with an id above `after`, newest first."""
    after = request.GET.get("after", "0")
    if not (after.isascii() and after.isdigit()):
        return JsonResponse({"error": "bad_request", "message": "after: must be an event id"}, status=400)
    events = dashboard.events_latest(request.project, limit=dashboard.LATEST_EVENTS, after_id=int(after))
    return JsonResponse({"events": [event_row_json(request, event) for event in events]})
