from celery import shared_task

from . import sending


@shared_task(ignore_result=True)
def deliver_task(delivery_id: int) -> None:
    """Send one queued delivery (a no-op if it was already claimed: safe to run twice)."""
    sending.delivery_send(delivery_id=delivery_id)
