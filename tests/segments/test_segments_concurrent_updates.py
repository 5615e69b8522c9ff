"""Live updates of one segment running at once (PostgreSQL, where the batches of a project's
partitions are processed concurrently): they do not wait for each other, the member count stays
the count of the memberships, and a workflow's segment trigger, which follows the segment's
changes by id, never steps over a change that committed after one with a higher id.

Each race is played step by step with real connections: one update is held inside its
transaction (by a row it must wait for, or by its caller's open transaction) while the other runs.
"""

import threading
import time

import pytest
from django.db import connection, transaction

from segments.membership import membership_rebuild, membership_update
from segments.models import Membership, MembershipChange, Segment
from segments.services import segment_create
from tests.factories import ProjectFactory
from workflows import services as workflow_services
from workflows.models import Run
from workflows.triggers import triggers_process

from .conditions_support import NOW, store_customer

pytestmark = pytest.mark.django_db(transaction=True)

PRO = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
TIMEOUT = 20


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("live updates overlap on PostgreSQL only (SQLite has one writer)")


class Step(threading.Thread):
    """`target` in a thread with its own database connection; what it raised is re-raised by `result`."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target, self.error, self.value = target, None, None

    def run(self):
        try:
            self.value = self.target()
        except BaseException as exc:  # noqa: BLE001 (handed to the test's thread)
            self.error = exc
        finally:
            connection.close()

    def result(self):
        self.join(TIMEOUT)
        assert not self.is_alive(), "still blocked"
        if self.error is not None:
            raise self.error
        return self.value


def waiting(query_start: str, wait_type: str) -> bool:
    """Whether another backend is blocked on a lock of `wait_type` in a query starting so."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND wait_event_type = 'Lock' "
            "AND wait_event = %s AND query LIKE %s",
            [wait_type, query_start + "%"],
        )
        return cursor.fetchone()[0] > 0


def until(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def pro_segment_and_customers(count: int):
    project = ProjectFactory()
    segment = segment_create(project=project, name="Pro", condition=PRO)
    membership_rebuild(segment, now=NOW)
    customers = [store_customer(project, {"plan": "pro"}) for _ in range(count)]
    return project, segment, customers


def test_a_live_update_of_a_segment_commits_while_another_of_it_is_still_in_its_transaction():
    project, segment, (held, free) = pro_segment_and_customers(2)
    inserted, release = threading.Event(), threading.Event()

    def hold_membership_row():
        # An uncommitted membership of `held`: the first update's INSERT waits for it, mid-transaction.
        with transaction.atomic():
            Membership.objects.create(segment=segment, customer=held, entered_at=NOW)
            inserted.set()
            release.wait(TIMEOUT)
            transaction.set_rollback(True)

    holder = Step(hold_membership_row)
    holder.start()
    inserted.wait(TIMEOUT)
    first = Step(lambda: membership_update(project.pk, [held.pk], now=NOW))
    try:
        first.start()
        until(lambda: waiting('INSERT INTO "segments_membership"', "transactionid"), "the first update to wait")
        # The second update (another customer of the same segment) runs to its end meanwhile.
        second = Step(lambda: membership_update(project.pk, [free.pk], now=NOW))
        second.start()
        assert second.result() == (1, 0)
        assert first.is_alive()
        assert set(Membership.objects.filter(segment=segment).values_list("customer_id", flat=True)) == {free.pk}
    finally:
        release.set()
        holder.result()
    assert first.result() == (1, 0)
    segment.refresh_from_db()
    assert set(Membership.objects.filter(segment=segment).values_list("customer_id", flat=True)) == {held.pk, free.pk}
    assert segment.member_count == 2
    assert sorted(MembershipChange.objects.filter(segment=segment).values_list("customer_id", "kind")) == sorted(
        [(held.pk, "entered"), (free.pk, "entered")]
    )


def test_two_live_updates_of_one_customer_take_turns_and_the_later_one_sees_the_first():
    project, segment, (customer,) = pro_segment_and_customers(1)
    done, release = threading.Event(), threading.Event()

    def first_held_open():
        with transaction.atomic():
            result = membership_update(project.pk, [customer.pk], now=NOW)
            done.set()
            release.wait(TIMEOUT)
        return result

    first = Step(first_held_open)
    first.start()
    done.wait(TIMEOUT)
    second = Step(lambda: membership_update(project.pk, [customer.pk], now=NOW))
    try:
        second.start()
        # It waits on the customer's row instead of evaluating against memberships not yet committed.
        until(lambda: waiting('SELECT s.* FROM "segments_segment"', "transactionid"), "the wait")
    finally:
        release.set()
    assert first.result() == (1, 0)
    assert second.result() == (0, 0)  # saw the membership the first committed: no duplicate entry
    segment.refresh_from_db()
    assert (segment.member_count, Membership.objects.filter(segment=segment).count()) == (1, 1)


def test_member_counts_of_concurrent_updates_add_up_to_the_memberships():
    project, segment, customers = pro_segment_and_customers(40)
    steps = [
        Step(lambda part=customers[n::4]: membership_update(project.pk, [c.pk for c in part], now=NOW))
        for n in range(4)
    ]
    for step in steps:
        step.start()
    assert sum(step.result()[0] for step in steps) == 40
    segment.refresh_from_db()
    assert segment.member_count == Membership.objects.filter(segment=segment).count() == 40
    # A rebuild finds nothing to change and keeps the count.
    assert membership_rebuild(segment, now=NOW) == (0, 0)
    segment.refresh_from_db()
    assert segment.member_count == 40


def test_a_segment_trigger_enrols_a_change_that_committed_after_a_change_with_a_higher_id():
    project, segment, (early, late) = pro_segment_and_customers(2)
    workflow = workflow_services.workflow_create(
        project=project,
        name="Welcome pros",
        definition={
            "trigger": {"type": "segment_entered", "segment_id": segment.pk},
            "frequency": {"type": "once"},
            "steps": [{"id": "tag", "type": "update_attribute", "action": "set", "trait": "welcomed", "value": True}],
            "edges": [{"from": "trigger", "to": "tag"}],
        },
        user=None,
    )
    workflow_services.workflow_activate(workflow=workflow, user=None)
    written, release = threading.Event(), threading.Event()

    def early_update_held_open():
        # Its change is written (the lower id), then its transaction stays open.
        with transaction.atomic():
            membership_update(project.pk, [early.pk], now=NOW)
            written.set()
            release.wait(TIMEOUT)

    first = Step(early_update_held_open)
    first.start()
    written.wait(TIMEOUT)
    second = Step(lambda: membership_update(project.pk, [late.pk], now=NOW))
    reader = Step(lambda: triggers_process(project_id=project.pk))
    try:
        second.start()
        until(lambda: MembershipChange.objects.filter(segment=segment, customer_id=late.pk).exists(), "the late change")
        reader.start()
        # The reader either waits for the update in flight or reads now (and would step over it).
        until(
            lambda: not reader.is_alive() or waiting("SELECT pg_advisory_lock", "advisory"),
            "the reader to read or wait",
        )
    finally:
        release.set()
    first.result()
    second.result()
    reader.result()
    triggers_process(project_id=project.pk)  # anything left is read now
    ids = set(MembershipChange.objects.filter(segment=segment).values_list("pk", flat=True))
    assert MembershipChange.objects.get(customer_id=early.pk).pk == min(ids)
    assert set(Run.objects.filter(workflow=workflow).values_list("customer_id", flat=True)) == {early.pk, late.pk}
    assert Segment.objects.get(pk=segment.pk).member_count == 2
