"""Sending one webhook attempt of a run's Webhook step, outside any transaction.

Claimed queued → sending by a conditional UPDATE (a task delivered twice sends once), sent with
its step's webhook-id, and recorded. A retryable failure queues the next attempt (backoff with
jitter, honouring Retry-After) up to WEBHOOK_MAX_ATTEMPTS; the run is then woken and its executor
takes the step's `next` or `failure` output. A worker killed between the claim and the record
leaves the attempt `sending`: the executor marks it interrupted for a person, never resends it.
"""

import logging

from django.conf import settings
from django.db import transaction

from timonier import clock

from .models import Run, WebhookAttempt
from .webhook_secrets import webhook_signing_secrets
from .webhooks import retry_delay, webhook_send

logger = logging.getLogger(__name__)


def webhook_attempt_send(*, attempt_id: int) -> WebhookAttempt | None:
    now = clock.now()
    claimed = WebhookAttempt.objects.filter(
        pk=attempt_id, status=WebhookAttempt.Status.QUEUED, due_at__lte=now
    ).update(status=WebhookAttempt.Status.SENDING, started_at=now)
    if not claimed:
        return None
    attempt = WebhookAttempt.objects.select_related("run__project").get(pk=attempt_id)
    request = attempt.request
    result = webhook_send(
        method=request["method"],
        url=request["url"],
        headers=request["headers"],
        body=request["body"].encode(),
        webhook_id=attempt.webhook_id,
        secrets=webhook_signing_secrets(project=attempt.run.project),
    )
    finished = clock.now()
    with transaction.atomic():
        attempt.status = WebhookAttempt.Status.SUCCEEDED if result.ok else WebhookAttempt.Status.FAILED
        attempt.finished_at = finished
        attempt.response_status = result.status
        attempt.response_body = result.body
        attempt.latency_ms = result.latency_ms
        attempt.error = result.error
        attempt.save(
            update_fields=["status", "finished_at", "response_status", "response_body", "latency_ms", "error"]
        )
        wake_at = finished
        if not result.ok and result.retryable and attempt.number < settings.WEBHOOK_MAX_ATTEMPTS:
            wake_at = finished + retry_delay(attempt.number, result.retry_after)
            WebhookAttempt.objects.create(
                run_id=attempt.run_id,
                seq=attempt.seq,
                number=attempt.number + 1,
                webhook_id=attempt.webhook_id,
                due_at=wake_at,
                request=request,
            )
        Run.objects.filter(pk=attempt.run_id, seq=attempt.seq, status__in=Run.IN_PROGRESS).update(wake_at=wake_at)
        if wake_at == finished:
            from .triggers import _wake_executor_on_commit

            _wake_executor_on_commit()
    logger.info("webhook run=%s attempt=%s status=%s", attempt.run_id, attempt.number, result.status)
    return attempt
