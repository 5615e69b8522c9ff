"""Reads of customers and events. Every function takes the project first: no unscoped query."""

from datetime import datetime

import orjson
from django.db.models import Q
from django.db.models.fields.json import KeyTransform

from organizations.models import Project
from timonier.api.cursors import BadCursor, decode_cursor, encode_cursor

from .models import Customer, Event, Identity


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
    segment_id: int | None = None,
) -> tuple[list[Customer], str | None]:
    """Newest customers first, keyset-paginated (no COUNT, no OFFSET: fast at any depth).

    `segment_id` keeps the current members of that segment (check it is the project's first:
    `segment_exists`)."""
    query = Customer.objects.filter(project=project)
    if segment_id is not None:
        # Through the relation segments declares, so cdp imports nothing of segments.
        query = query.filter(segment_memberships__segment_id=segment_id)
    for index, (name, value) in enumerate((traits or {}).items()):
        query = _filter_trait(query, index, name, value)
    if search:
        term = search.strip()
        query = query.filter(
            Q(external_id=term) | Q(email=term.lower()) | Q(name__icontains=term) | Q(email__istartswith=term)
        )
    if external_id is not None:
        query = query.filter(external_id=external_id)
    if cursor:
        values = decode_cursor(cursor)
        if len(values) != 1 or not isinstance(values[0], int):
            raise BadCursor("cursor: not a cursor this API returned")
        query = query.filter(pk__lt=values[0])
    rows = list(query.order_by("-pk")[: limit + 1])
    next_cursor = encode_cursor(rows[limit - 1].pk) if len(rows) > limit else None
    return rows[:limit], next_cursor


def segment_exists(project: Project, segment_id: int) -> bool:
    return project.segments.filter(pk=segment_id).exists()


def _filter_trait(query, index: int, name: str, value: str):
    """Customers whose trait `name` (dotted for nested: `address.city`) equals `value`.

    Each dotted part is a JSON key, never a Django lookup. A value that reads as a JSON number or
    boolean also matches that number or boolean (`traits.age=30` finds 30 and "30").
    """
    expression = "traits"
    for part in name.split("."):
        expression = KeyTransform(part, expression)
    alias = f"_trait{index}"
    condition = Q(**{alias: value})
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        parsed = value
    if isinstance(parsed, (int, float, bool)):
        condition |= Q(**{alias: parsed})
    return query.alias(**{alias: expression}).filter(condition)


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
            at, last_id = datetime.fromisoformat(at), int(last_id)
        except (ValueError, TypeError):
            raise BadCursor("cursor: not a cursor this API returned") from None
        query = query.filter(Q(timestamp__lt=at) | Q(timestamp=at, pk__lt=last_id))
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


def first_anonymous_ids(project: Project, customer_ids: list[int]) -> dict[int, str]:
    """The first anonymous id of each of these customers that has one (one query for a page)."""
    first: dict[int, str] = {}
    if customer_ids:
        identities = Identity.objects.filter(
            project=project, kind=Identity.Kind.ANONYMOUS_ID, customer_id__in=customer_ids
        ).order_by("created_at", "pk")
        for customer_id, value in identities.values_list("customer_id", "value"):
            first.setdefault(customer_id, value)
    return first


def customers_list(
    project: Project, *, limit: int, cursor: str | None = None, search: str | None = None
) -> tuple[list[Customer], str | None]:
    """The platform's customer list: `customers_page`, plus `first_anonymous_id` on anonymous rows."""
    rows, next_cursor = customers_page(project, limit=limit, cursor=cursor, search=search)
    first_ids = first_anonymous_ids(project, [row.pk for row in rows if row.external_id is None])
    for row in rows:
        row.first_anonymous_id = first_ids.get(row.pk)
    return rows, next_cursor


def customer_get(project: Project, pk: int) -> Customer | None:
    return Customer.objects.filter(project=project, pk=pk).first()
