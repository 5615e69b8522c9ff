import time

from cdp import inbox


def test_a_wake_up_inside_the_interval_is_sent_at_its_end(monkeypatch):
    sent: list[tuple[int, float]] = []
    monkeypatch.setattr(inbox, "_publish", lambda project_id: sent.append((project_id, time.monotonic())))
    monkeypatch.setattr(inbox, "_last_wake", {})
    started = time.monotonic()
    for _ in range(5):
        inbox.wake(42)
    deadline = time.monotonic() + 2
    while not sent and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [p for p, _ in sent] == [42]  # the first at once (from the publisher thread), the rest folded
    assert sent[0][1] - started < inbox.WAKE_INTERVAL
    while len(sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [p for p, _ in sent] == [42, 42]
    assert sent[1][1] - started >= inbox.WAKE_INTERVAL * 0.9
    time.sleep(inbox.WAKE_INTERVAL * 2)
    assert len(sent) == 2  # nothing more without new calls
