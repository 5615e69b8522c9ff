"""What the CDP tells other apps. `cdp` knows nothing of segments or workflows: they subscribe.

- `customers_changed(project_id, changes, recheck_all)`: after a batch commits; `changes` maps
  each customer id to (names of traits that changed, names of events tracked); `recheck_all` is
  the set of customer ids created or merged into by the batch, on which anything may now hold.
- `batch_stored(project_id, events, trait_changes)`: inside the batch's transaction, after its
  rows are written: `events` lists the stored track events as (customer id, message), and
  `trait_changes` each identify that changed traits as (customer id, message_id, [(trait, old,
  new), …]). What a receiver writes commits or rolls back with the batch (workflow triggers), so
  it must be quick and must not fail on good data: an exception rolls the batch back.
- `customers_changed` receivers run after the commit, each isolated: one that raises is logged.
- `customers_removing(project_id, customer_ids, erased)`: inside the batch's transaction, once,
  before the batch deletes customers (merged into another, or erased), so their memberships can
  end; `erased` lists those of `customer_ids` erased (right to erasure): forget what you keep of them.
- `customer_merged(project_id, secondary_id, primary_id)`: inside the batch's transaction, before
  the secondary customer row is deleted.
"""

from django.dispatch import Signal

customers_changed = Signal()
batch_stored = Signal()
customers_removing = Signal()
customer_merged = Signal()
