"""The database and Python agree on every customer, for random customers, events and conditions."""

import json
from datetime import timedelta

from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments.conditions import matches, validate
from segments.conditions.grammar import OPERATORS
from segments.models import Membership, Segment
from tests.factories import ProjectFactory

from .conditions_support import NOW, as_event, matched_ids, store_customer

# Small vocabularies, so that random conditions often hit random data.
STRINGS = [
    "pro",
    "Pro",
    "pro-plus",
    "free",
    "",
    "30",
    "a%b_c",
    "été",
    "2024-05-01",
    "2024-05-01T10:00:00Z",
    "2024-06-15",
]
NUMBERS = [0, 1, -3, 2.5, 30, 30.0, 100]
DATES = ["2024-05-01", "2024-05-01T00:00:00Z", "2024-05-01T10:00:00Z", "2024-06-15", "2023-12-31T23:59:59Z"]
TRAIT_NAMES = ["plan", "age", "tags", "signup", "address", "address.city", "vip", "missing"]
PROPERTY_NAMES = ["amount", "currency", "item", "item.sku"]
EVENT_NAMES = ["purchase", "signup", "view"]
MINUTES_AGO = [-30, 0, 59, 60, 61, 60 * 24, 60 * 24 * 7, 60 * 24 * 7 + 1, 60 * 24 * 30]
INSTANTS = ["2026-02-01", "2026-03-08T12:00:00Z", "2026-03-15", "2026-03-15T11:00:00Z", "2026-03-15T12:00:00+00:00"]

scalars = st.one_of(st.sampled_from(STRINGS), st.sampled_from(NUMBERS), st.booleans())
json_values = st.one_of(
    scalars,
    st.none(),
    st.lists(scalars, max_size=3),
    st.fixed_dictionaries({}, optional={"city": st.one_of(scalars, st.none()), "sku": scalars}),
)
trait_dicts = st.dictionaries(
    st.sampled_from(["plan", "age", "tags", "signup", "address", "vip"]), json_values, max_size=5
)
property_dicts = st.dictionaries(st.sampled_from(["amount", "currency", "item"]), json_values, max_size=3)
events = st.fixed_dictionaries(
    {
        "name": st.sampled_from(EVENT_NAMES),
        "type": st.sampled_from(["track", "track", "page"]),
        "properties": property_dicts,
        "timestamp": st.sampled_from(MINUTES_AGO).map(lambda minutes: NOW - timedelta(minutes=minutes)),
    }
)
customers = st.lists(st.tuples(trait_dicts, st.lists(events, max_size=5)), min_size=4, max_size=10)


@st.composite
def operations(draw):
    """An op and its value (absent for is_set / is_not_set), of a type the op accepts."""
    op = draw(st.sampled_from(OPERATORS))
    if op in ("is_set", "is_not_set"):
        return {"op": op}
    if op in ("in", "not_in"):
        return {"op": op, "value": draw(st.lists(scalars, max_size=3))}
    if op in ("starts_with", "ends_with"):
        return {"op": op, "value": draw(st.sampled_from(STRINGS + ["p", "pro-", "C", "c", "%", "_"]))}
    if op.startswith(("greater", "less")):
        return {"op": op, "value": draw(st.one_of(st.sampled_from(NUMBERS), st.sampled_from(DATES)))}
    return {"op": op, "value": draw(scalars)}


trait_conditions = st.builds(
    lambda name, operation: {"type": "trait", "name": name, **operation}, st.sampled_from(TRAIT_NAMES), operations()
)


@st.composite
def event_conditions(draw):
    condition = {"type": "event", "event_name": draw(st.sampled_from(EVENT_NAMES))}
    if draw(st.booleans()):
        condition["count"] = {
            "op": draw(st.sampled_from(["equals", "not_equals", "greater_than", "less_than", "less_than_or_equals"])),
            "value": draw(st.integers(0, 3)),
        }
    window = draw(st.sampled_from(["none", "within", "between"]))
    if window == "within":
        condition["within"] = {
            "value": draw(st.sampled_from([1, 7, 60])),
            "unit": draw(st.sampled_from(["minutes", "hours", "days", "weeks"])),
        }
    elif window == "between":
        start, end = sorted(draw(st.lists(st.sampled_from(range(len(INSTANTS))), min_size=2, max_size=2, unique=True)))
        condition["between"] = {"from": INSTANTS[start], "to": INSTANTS[end]}
    filters = draw(
        st.lists(
            st.builds(
                lambda name, operation: {"name": name, **operation}, st.sampled_from(PROPERTY_NAMES), operations()
            ),
            max_size=2,
        )
    )
    if filters:
        condition["where"] = filters
    return condition


# Placeholders for the two segments each example stores (their ids are known only then).
SEGMENT_SLOTS = [-1, -2]
segment_conditions = st.sampled_from(SEGMENT_SLOTS).map(lambda slot: {"type": "segment", "segment_id": slot})


def conditions(depth: int):
    leaves = st.one_of(trait_conditions, trait_conditions, event_conditions(), segment_conditions)
    if depth == 1:
        return leaves
    inner = conditions(depth - 1)
    return st.one_of(
        leaves,
        st.builds(
            lambda kind, children: {"type": kind, "conditions": children},
            st.sampled_from(["and", "or"]),
            st.lists(inner, min_size=1, max_size=3),
        ),
        st.builds(lambda child: {"type": "not", "condition": child}, inner),
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(population=customers, tested=st.lists(conditions(3), min_size=3, max_size=6))
def test_sql_selects_exactly_the_customers_python_matches(db, population, tested):
    with transaction.atomic():
        project = ProjectFactory()
        stored = [(store_customer(project, traits, history), traits, history) for traits, history in population]
        # Two segments; customer i is in the first when i is even, in the second when i % 3 == 0.
        slots = {slot: Segment.objects.create(project=project, name=str(slot), condition={}) for slot in SEGMENT_SLOTS}
        in_segments = {}
        for index, (customer, _, _) in enumerate(stored):
            in_segments[customer.id] = set()
            for slot, every in zip(SEGMENT_SLOTS, (2, 3), strict=True):
                if index % every == 0:
                    Membership.objects.create(segment=slots[slot], customer=customer, entered_at=NOW)
                    in_segments[customer.id].add(slots[slot].pk)
        for placeholder_condition in tested:
            condition = json.loads(
                json.dumps(placeholder_condition),
                object_hook=lambda node: (
                    {**node, "segment_id": slots[node["segment_id"]].pk} if node.get("type") == "segment" else node
                ),
            )
            assert validate(condition) == []
            expected = {
                customer.id
                for customer, traits, history in stored
                if matches(
                    condition,
                    traits=traits,
                    events=[as_event(e) for e in history],
                    now=NOW,
                    segments=in_segments[customer.id],
                )
            }
            assert matched_ids(project, condition) == expected, condition

        # Each example leaves the database as it found it.
        transaction.set_rollback(True)
