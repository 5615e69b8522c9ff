"""Reads of customers and events. Every function takes the project first: no unscoped query."""

import base64
from datetime import datetime

import orjson
from django.db.models import Q

from organizations.models import Project

from .models import Customer, Event, Identity


class BadCursor(ValueError):
    pass


def encode_cursor(*values) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str) -> list:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise BadCursor("cursor: not a cursor this API returned") from None
    if not isinstance(values, list):
        raise BadCursor("cursor: not a cursor this API returned")
    return values


def customer_by_id(project: Project, customer_id: str) -> Customer | None:
    """The customer a customer_id resolves to, following merges."""
    identity = (
        Identity.objects.filter(project=project, kind=Identity.Kind.CUSTOMER_ID, value=customer_id)
        .select_related("customer")
        .first()
    )
    return identity.customer if identity else None


def customers_page(
    project: Project,
    *,
    limit: int,
    cursor: str | None = None,
    traits: dict | None = None,
    search: str | None = None,
    external_id: str | None = None,
) -> tuple[list[Customer], str | None]:
    """Newest customers first, keyset-paginated (no COUNT, no OFFSET: fast at any depth)."""
    query = Customer.objects.filter(project=project)
    for name, value in (traits or {}).items():
        query = query.filter(**{f"traits__{name}": value})
    if search:
        term = search.strip()
        query = query.filter(
            Q(external_id=term) | Q(email=term.lower()) | Q(name__icontains=term) | Q(email__istartswith=term)
        )
    if external_id is not None:
        query = query.filter(external_id=external_id)
    if cursor:
        (last_id,) = decode_cursor(cursor)
        query = query.filter(pk__lt=int(last_id))
    rows = list(query.order_by("-pk")[: limit + 1])
    next_cursor = encode_cursor(rows[limit - 1].pk) if len(rows) > limit else None
    return rows[:limit], next_cursor


def customer_identities(customer: Customer) -> list[Identity]:
    return list(customer.identities.order_by("kind", "created_at"))


def customer_events_page(
    project: Project, customer: Customer, *, limit: int, cursor: str | None = None, name: str | None = None
) -> tuple[list[Event], str | None]:
    """A customer's timeline, newest first, keyset-paginated on (timestamp, id)."""
    query = Event.objects.filter(project=project, customer=customer)
    if name:
        query = query.filter(name=name)
    if cursor:
        try:
            at, last_id = decode_cursor(cursor)
            at = datetime.fromisoformat(at)
        except (ValueError, TypeError):
            raise BadCursor("cursor: not a cursor this API returned") from None
        query = query.filter(Q(timestamp__lt=at) | Q(timestamp=at, pk__lt=int(last_id)))
    rows = list(query.order_by("-timestamp", "-pk")[: limit + 1])
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.timestamp.isoformat(), last.pk)
    return rows[:limit], next_cursor


def events_page(
    project: Project,
    *,
    limit: int,
    customer: Customer | None = None,
    name: str | None = None,
    type: str | None = None,
) -> list[Event]:
    query = Event.objects.filter(project=project).select_related("customer")
    if type:
        query = query.filter(type=type)
    if customer is not None:
        query = query.filter(customer=customer)
    if name:
        query = query.filter(name=name)
    return list(query.order_by("-timestamp", "-pk")[:limit])
