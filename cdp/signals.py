"""What the CDP tells other apps. `cdp` knows nothing of segments or workflows: they subscribe.

- `customers_changed(project_id, changes)`: after a batch commits; `changes` maps each customer
  id to (names of traits that changed, names of events tracked).
- `customer_merged(project_id, secondary_id, primary_id)`: inside the batch's transaction, before
  the secondary customer row is deleted.
"""

from django.dispatch import Signal

customers_changed = Signal()
customer_merged = Signal()
