"""Wake-ups across API processes: one message per partition and interval whatever the number of
processes, claimed in Redis; a process that lost the claim asks again once it expires, so no
command is left for the sweep. A process is its throttle's state (`_last_wake`): cleared, the next
wake-up is what another process would send."""

import pytest

from cdp import inbox
from tests.live import free_port, wait_for
from timonier.redis_client import get_redis

from .test_request_path import redis_url  # noqa: F401 (the test's own redis-server)

pytestmark = pytest.mark.usefixtures("redis_url")
KEY = (42, 3)
REDIS_KEY = "cdp:wake:42:3"


@pytest.fixture
def sent(monkeypatch) -> list[tuple[int, int | None]]:
    published: list[tuple[int, int | None]] = []
    monkeypatch.setattr(inbox, "_publish", lambda project_id, partition: published.append((project_id, partition)))
    for state in ("_last_wake", "_trailing", "_rechecks"):
        monkeypatch.setattr(inbox, state, {})
    monkeypatch.setattr(inbox, "_queued", set())
    return published


def another_process(monkeypatch) -> None:
    monkeypatch.setattr(inbox, "_last_wake", {})


def idle() -> bool:
    with inbox._wake_lock:
        return not (inbox._queued or inbox._trailing or inbox._rechecks)


def test_four_processes_send_one_wake_up_then_one_for_those_who_asked_after_it(sent, monkeypatch):
    inbox.wake(*KEY)
    wait_for(lambda: sent == [KEY], timeout=5, what="the first process's wake-up")

    for _ in range(3):
        another_process(monkeypatch)
        inbox.wake(*KEY)
    wait_for(lambda: KEY in inbox._rechecks, timeout=5, what="the others' claims, lost")

    assert sent == [KEY]  # within the interval, the claim's holder alone published
    wait_for(idle, timeout=5, what="the lost claims asked again once the holder's expired")
    # One more, published after the others' commands committed (they asked after the first was sent).
    assert sent == [KEY, KEY]


def test_a_lost_claim_is_dropped_when_another_process_claimed_the_next_interval(sent, monkeypatch):
    inbox.wake(*KEY)
    wait_for(lambda: sent == [KEY], timeout=5, what="the first process's wake-up")
    another_process(monkeypatch)
    inbox.wake(*KEY)
    wait_for(lambda: KEY in inbox._rechecks, timeout=5, what="the second process's claim, lost")

    get_redis().set(REDIS_KEY, b"a third process", px=5_000)  # it claimed the next interval

    wait_for(idle, timeout=5, what="the lost claim asked again")
    assert sent == [KEY]  # the third process publishes it, after the second's commands committed


def test_each_partition_is_claimed_on_its_own(sent):
    inbox.wake(42, 0)
    inbox.wake(42, 1)
    inbox.wake(43, 0)

    wait_for(lambda: len(sent) >= 3, timeout=5, what="three wake-ups")
    assert sorted(sent) == [(42, 0), (42, 1), (43, 0)]
    assert get_redis().exists("cdp:wake:42:0", "cdp:wake:42:1", "cdp:wake:43:0") == 3


def test_without_an_answer_from_redis_every_wake_up_is_published(sent, settings, monkeypatch):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    inbox.wake(*KEY)
    wait_for(lambda: sent == [KEY], timeout=5, what="the first wake-up")
    another_process(monkeypatch)

    inbox.wake(*KEY)

    wait_for(lambda: sent == [KEY, KEY], timeout=5, what="the second, unclaimed")
