"""What a project may send through the server's SMTP relay, so an open instance is no spam relay.

- From addresses: on a domain the project declared (Settings → Sending domains) or on the domain of
  DEFAULT_FROM_EMAIL. Anyone can sign up and make a project; without this they could send as any
  bank's domain through the operator's relay and reputation.
- Test sends (a draft to any address, typed in the template page): only to members of the
  project's organization, and at most TEST_SENDS_PER_USER per TEST_SEND_WINDOW per person.
"""

import time
from datetime import timedelta
from email.utils import parseaddr

from django.conf import settings
from django.core.cache import cache

from accounts.models import User
from organizations.models import Membership, Project
from timonier import clock

TEST_SENDS_PER_USER = 10
TEST_SEND_WINDOW = timedelta(minutes=10)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def default_sender_domain() -> str:
    return _domain(parseaddr(settings.DEFAULT_FROM_EMAIL)[1])


def from_address_problem(*, project: Project, address: str) -> str | None:
    """Why `address` may not be a From of this project's emails; None when it may (or is blank: the default)."""
    if not address:
        return None
    domain = _domain(address)
    if domain == default_sender_domain() or domain in project.sending_domains:
        return None
    return (
        f"{domain} is not a sending domain of this project: add it under Settings → Sending domains, "
        f"or use an address at {default_sender_domain()}."
    )


def recipient_problem(*, project: Project, address: str) -> str | None:
    """Why a test send may not go to `address`: test emails go to the organization's members only."""
    if Membership.objects.filter(organization_id=project.organization_id, user__email__iexact=address).exists():
        return None
    return (
        "Test emails go only to members of this organization: use your own address or a teammate's "
        "(invite them under Members first)."
    )


def take_test_send(*, user: User) -> str | None:
    """Count one test send of `user`; the error to show instead when they are over the limit.

    A sliding window of send times in the shared cache (Redis in production), read from
    `clock.now()` so tests move time, counted under a lock (below): sends at the same instant
    are counted one after the other.
    """
    key = f"emails:test-sends:{user.pk}"
    if not _lock(key):
        return "Another test send of yours is being counted: try again in a moment."
    try:
        now = clock.now().timestamp()
        window = TEST_SEND_WINDOW.total_seconds()
        recent = [at for at in cache.get(key, []) if at > now - window]
        if len(recent) >= TEST_SENDS_PER_USER:
            wait = max(1, round((recent[0] + window - now) / 60))
            return (
                f"You sent {TEST_SENDS_PER_USER} test emails in the last {int(window // 60)} minutes, the most "
                f"allowed: try again in {wait} minute{'s' if wait != 1 else ''}."
            )
        cache.set(key, [*recent, now], timeout=int(window) + 60)
        return None
    finally:
        cache.delete(f"{key}:lock")


# The window is read and written under a lock of its own in the cache (`cache.add`, SET NX on
# Redis): else two sends at once both read nine recent sends and both go, and a script posting
# in parallel gets past the limit. The lock expires on its own if its holder dies.
LOCK_SECONDS = 5
LOCK_WAIT = 2.0  # seconds a send waits for another one's count (a few milliseconds each)


def _lock(key: str) -> bool:
    deadline = time.monotonic() + LOCK_WAIT
    while not cache.add(f"{key}:lock", 1, timeout=LOCK_SECONDS):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
