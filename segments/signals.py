"""Sent once per membership computation, with every customer that entered or left a segment.

Receivers of `segment_entered` / `segment_exited` get `segment=` (a Segment) and `customer_ids=`
(a list of customer primary keys), one call per segment and kind. `segments_changed` follows them
once per computation, with `project_id=` and `segment_ids=` (those whose membership changed): a
receiver that only needs to know which segments moved (to wake work up) asks once per batch,
rather than once per segment. All are sent after the transaction that stored the change commits,
so receivers see the new state.
"""

from django.dispatch import Signal

segment_entered = Signal()
segment_exited = Signal()
segments_changed = Signal()
