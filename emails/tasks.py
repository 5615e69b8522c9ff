from datetime import timedelta

from celery import shared_task

from timonier import clock

from . import sending
from .deliveries import SEND_CHUNK
from .models import Delivery

# A delivery still queued this long after it was created lost its task (the broker was down when
# it was sent, or the message was dropped): the sweep sends it.
STRANDED_AFTER = timedelta(minutes=2)
SWEEP_BATCH = 500


@shared_task(ignore_result=True)
def deliver_task(delivery_id: int) -> None:
    """Send one queued delivery (a no-op if it was already claimed: safe to run twice)."""
    sending.delivery_send(delivery_id=delivery_id)


@shared_task(ignore_result=True)
def deliveries_send_task(delivery_ids: list[int]) -> None:
    """Send queued deliveries over one SMTP connection (each claimed alone: safe to run twice)."""
    sending.deliveries_send(delivery_ids=delivery_ids)


@shared_task(ignore_result=True)
def deliveries_sweep_task() -> int:
    """Backstop for lost tasks: send the deliveries left queued; returns how many it sent."""
    stranded = Delivery.objects.filter(
        status=Delivery.Status.QUEUED, created_at__lt=clock.now() - STRANDED_AFTER
    ).order_by("pk")
    ids = list(stranded.values_list("pk", flat=True)[:SWEEP_BATCH])
    # In chunks as the send task does: each claimed in one statement, one SMTP connection each.
    return sum(sending.deliveries_send(delivery_ids=ids[i : i + SEND_CHUNK]) for i in range(0, len(ids), SEND_CHUNK))
