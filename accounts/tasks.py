from datetime import timedelta

from celery import shared_task

from . import services

SWEEP_AFTER = timedelta(seconds=30)  # a form's own task has answered it long before


@shared_task
def purge_expired_verifications_task() -> int:
    return services.verifications_purge_expired()


@shared_task(ignore_result=True)
def signup_request_answer_task(request_id: int) -> None:
    services.signup_request_answer(request_id=request_id)


@shared_task(ignore_result=True)
def signup_requests_sweep_task() -> None:
    """Backstop for a lost wake-up: stored forms not answered within SWEEP_AFTER."""
    services.signup_requests_answer_pending(older_than=SWEEP_AFTER)
