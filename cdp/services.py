"""Writes other apps ask of the CDP. They go through the same inbox as the API, so they are
ordered with the project's other calls, deduplicated by their message id, and on the timeline."""

from datetime import datetime

from .inbox import commands_enqueue
from .messages import normalize
from .models import Customer, Identity
from .resolution import INCREMENT


def customer_identify_enqueue(
    *, customer: Customer, traits: dict, message_id: str, at: datetime, source: str
) -> bool:
    """Queue an identify of `customer` with `traits` (a null removes one), as if the application had
    sent it. Inside a transaction it commits with the caller's writes. A repeated `message_id` is
    applied once (the processor skips a message id already stored), so a retried caller is a no-op.
    Returns False when the customer has no id to address them by (nothing is queued)."""
    message = _identify_message(customer, traits, message_id, at, source)
    if message is None:
        return False
    commands_enqueue(project_id=customer.project_id, messages=[message], received_at=at)
    return True


def customer_trait_increment_enqueue(
    *, customer: Customer, trait: str, by: int | float, message_id: str, at: datetime, source: str
) -> bool:
    """Queue an identify that adds `by` to the customer's (dotted) `trait`, counted from the value
    the processor holds when it applies the call, in order with the customer's other calls — not
    from a value read now, which two callers at once (or an identify meanwhile) would make stale.
    A missing or non-numeric value counts as 0. Keyed by `message_id` like an identify (applied once).

    The increment rides on the normalised message under a key `normalize()` never produces, so
    only internal callers can queue one: an API call's body cannot."""
    message = _identify_message(customer, {}, message_id, at, source)
    if message is None:
        return False
    message[INCREMENT] = {"trait": trait, "by": by}
    commands_enqueue(project_id=customer.project_id, messages=[message], received_at=at)
    return True


def _identify_message(customer: Customer, traits: dict, message_id: str, at: datetime, source: str) -> dict | None:
    raw = {
        "type": "identify",
        "traits": traits,
        "timestamp": at.isoformat(),
        "message_id": message_id,
        "context": {"source": source},
    }
    if customer.external_id:
        raw["customer_id"] = customer.external_id
    else:
        anonymous = (
            Identity.objects.filter(customer=customer, kind=Identity.Kind.ANONYMOUS_ID).order_by("pk").first()
        )
        if anonymous is None:
            return None
        raw["anonymous_id"] = anonymous.value
    return normalize(raw, received_at=at)
