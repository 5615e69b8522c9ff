"""Reads of the accounts domain."""

from datetime import timedelta

from django.conf import settings

from organizations.models import Invitation
from timonier import clock

from .models import User


def signup_open_to(*, email: str) -> bool:
    """Whether this address may create an account under SIGNUP_MODE.

    `open`: anyone. `invite`: an address with a pending, unexpired invitation, or anyone while
    no account is active yet, so the very first user of a fresh instance can get in (counting
    only active accounts, so a stranger's unfinished signup cannot shut the operator out).
    """
    if settings.SIGNUP_MODE == "open":
        return True
    if not User.objects.filter(is_active=True).exists():
        return True
    cutoff = clock.now() - timedelta(seconds=settings.INVITATION_MAX_AGE)
    return Invitation.objects.filter(email__iexact=email, accepted_at__isnull=True, created_at__gte=cutoff).exists()
