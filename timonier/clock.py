"""The one clock of the project: code never calls timezone.now(), it calls `clock.now()`.

Model fields declare `default=clock.now`, so they hold this very function: tests move time with
`travel`, which changes what `now()` answers, never by patching the function (a patched name would
not reach the defaults Django captured at import). Services, the executor, model defaults and
querysets computed from `now()` all follow it.

    with clock.travel(datetime(2026, 1, 1, tzinfo=UTC)) as traveller:
        ...                             # now() is 2026-01-01 00:00
        traveller.advance(hours=1)      # now() is 01:00
        traveller.move_to(some_instant)

`travel(..., tick=True)` lets time flow from the instant given instead of freezing it.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.utils import timezone

_lock = threading.Lock()
_frozen: datetime | None = None
_offset = timedelta(0)


def now() -> datetime:
    frozen = _frozen
    if frozen is not None:
        return frozen
    return timezone.now() + _offset


class Traveller:
    """Moves the clock while a `travel` block lasts."""

    def __init__(self, tick: bool):
        self.tick = tick

    def move_to(self, instant: datetime) -> None:
        global _frozen, _offset
        if timezone.is_naive(instant):
            raise ValueError("travel needs an aware datetime")
        with _lock:
            if self.tick:
                _frozen, _offset = None, instant - timezone.now()
            else:
                _frozen = instant

    def advance(self, delta: timedelta | None = None, **units: float) -> datetime:
        self.move_to(now() + (delta or timedelta()) + timedelta(**units))
        return now()


@contextmanager
def travel(to: datetime, *, tick: bool = False) -> Iterator[Traveller]:
    global _frozen, _offset
    with _lock:
        saved = (_frozen, _offset)
    traveller = Traveller(tick)
    traveller.move_to(to)
    try:
        yield traveller
    finally:
        with _lock:
            _frozen, _offset = saved
