"""Writes other apps ask of the CDP. They go through the same inbox as the API, so they are
ordered with the project's other calls, deduplicated by their message id, and on the timeline."""

from datetime import datetime

from .inbox import commands_enqueue
from .messages import normalize
from .models import Customer, Identity


def customer_identify_enqueue(
    *, customer: Customer, traits: dict, message_id: str, at: datetime, source: str
) -> bool:
    """Queue an identify of `customer` with `traits` (a null removes one), as if the application had
    sent it. Inside a transaction it commits with the caller's writes. A repeated `message_id` is
    applied once (the processor skips a message id already stored), so a retried caller is a no-op.
    Returns False when the customer has no id to address them by (nothing is queued)."""
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
            return False
        raw["anonymous_id"] = anonymous.value
    commands_enqueue(project_id=customer.project_id, messages=[normalize(raw, received_at=at)], received_at=at)
    return True
