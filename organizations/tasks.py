from celery import shared_task

from . import services


@shared_task
def purge_expired_invitations_task() -> int:
    return services.invitations_purge_expired()
