from celery import shared_task

from . import services


@shared_task
def purge_expired_verifications_task() -> int:
    return services.verifications_purge_expired()
