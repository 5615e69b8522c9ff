"""Wake-ups: folded per (project, partition), never lost at the end of a burst. How fast the first
one leaves is measured by the bench, not asserted here."""

import time

import pytest
from django.test import override_settings

from cdp import inbox
from tests.live import wait_for


@pytest.fixture
def sent(monkeypatch) -> list[tuple[int, int | None]]:
    published: list[tuple[int, int | None]] = []
    monkeypatch.setattr(inbox, "_publish", lambda project_id, partition: published.append((project_id, partition)))
    monkeypatch.setattr(inbox, "_last_wake", {})
    return published


def test_wake_ups_inside_the_interval_fold_into_one_sent_at_its_end(sent):
    for _ in range(5):
        inbox.wake(42, 3)
    wait_for(lambda: len(sent) >= 2, timeout=5, what="the first wake-up and the trailing one")
    time.sleep(inbox.WAKE_INTERVAL * 3)
    assert sent == [(42, 3), (42, 3)]  # the first at once, the four others folded into one


def test_each_partition_is_woken_on_its_own(sent):
    inbox.wake(42, 0)
    inbox.wake(42, 1)
    inbox.wake(43, 0)
    wait_for(lambda: len(sent) >= 3, timeout=5, what="three wake-ups")
    assert sorted(sent) == [(42, 0), (42, 1), (43, 0)]


@override_settings(INGEST_PARTITIONS=8)
def test_the_partition_follows_the_customer_id_else_the_anonymous_id():
    assert inbox.partition_of({"customer_id": "u-1", "anonymous_id": "a"}) == inbox.partition_of(
        {"customer_id": "u-1", "anonymous_id": None}
    )
    assert inbox.partition_of({"customer_id": None, "anonymous_id": "a-1"}) == inbox.partition_of(
        {"customer_id": "a-1", "anonymous_id": None}
    )
    assert {inbox.partition_of({"customer_id": f"u-{n}"}) for n in range(200)} == set(range(8))
    # Stable across processes and releases: CRC-32, not Python's salted hash().
    assert inbox.partition_of({"customer_id": "user_001"}) == 3_198_446_528 % 8  # crc32(b"user_001")
