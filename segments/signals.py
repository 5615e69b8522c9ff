"""Sent once per membership computation, with every customer that entered or left a segment.

Receivers get `segment=` (a Segment) and `customer_ids=` (a list of customer primary keys). They
are sent after the transaction that stored the change commits, so receivers see the new state.
"""

from django.dispatch import Signal

segment_entered = Signal()
segment_exited = Signal()
