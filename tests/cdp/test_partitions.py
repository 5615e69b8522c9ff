"""One project drained by several workers at once, one partition of its inbox each.

Real PostgreSQL and real Celery worker processes, sharing a broker of their own: calls of one
customer stay in order, a merge across partitions racing with both customers' events loses and
doubles nothing, and a worker killed mid-batch leaves the others going and its work to them.
The two races that partitions open are also played step by step, a batch of one partition held
inside its transaction while another partition's batch runs in a second thread.
"""

import os
import signal
import threading
from datetime import datetime

import pytest
from django.db import connection

from cdp.inbox import commands_enqueue, partition_of
from cdp.models import Command, Customer, Event, FailedCommand
from cdp.processing import commands_process
from cdp.selectors import customer_events_page
from cdp.signals import batch_stored, customer_merged
from tests.factories import ProjectFactory
from tests.live import CeleryWorker, wait_for
from timonier import clock

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PROCESSED = "processed project={project} partition="


@pytest.fixture(autouse=True)
def _postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("partitions are drained in parallel on PostgreSQL only (SQLite has one writer)")


class Worker(CeleryWorker):
    """A live worker with a node name of its own, so that several can share one broker."""

    def __init__(self, env: dict, log_path, name: str):
        self.node = name
        super().__init__(env, log_path)

    def start(self) -> None:
        at = self.cmd.index("-n")
        self.cmd[at + 1] = f"{self.node}-{os.getpid()}@%h"
        super().start()

    def batches(self, project_id: int) -> int:
        return self.log_since_start().count(PROCESSED.format(project=project_id))


@pytest.fixture
def workers(live_db_env, tmp_path):
    """Start `count` workers on a broker of the test's own (the session's worker must not take
    these wake-ups); stopped at the end."""
    env = dict(live_db_env)
    url = env["CELERY_BROKER_URL"]
    if url.startswith(("redis://", "rediss://")):
        env["CELERY_BROKER_URL"] = url.rsplit("/", 1)[0] + "/12"
    else:  # the filesystem broker lives in TIMONIER_VAR_DIR
        env["TIMONIER_VAR_DIR"] = str(tmp_path / "var")
    started: list[Worker] = []

    def start(count: int) -> list[Worker]:
        numbers = range(len(started), len(started) + count)
        new = [Worker(env, tmp_path / f"worker-{n}.log", f"part{n}") for n in numbers]
        started.extend(new)
        for worker in new:
            worker.wait_until(worker.ready, 60, 'did not log "ready"')
        return new

    yield start
    for worker in started:
        worker.stop()


def _call(kind: str, customer_id: str, message_id: str, at: datetime, **fields) -> dict:
    return {
        "type": kind,
        "customer_id": customer_id,
        "anonymous_id": None,
        "event": fields.get("event", ""),
        "traits": fields.get("traits"),
        "properties": fields.get("properties", {}),
        "context": {},
        "timestamp": at.isoformat(),
        "message_id": message_id,
        "previous": fields.get("previous"),
        "group_id": None,
    }


def _enqueue(project, messages: list[dict]) -> None:
    commands_enqueue(project_id=project.pk, messages=messages, received_at=clock.now())


def _drain(workers: list[Worker], project, timeout: float = 180) -> None:
    workers[0].wait_processed(project.pk, timeout=timeout)  # wakes the whole project: one task per partition


def _stored_message_ids(project) -> list[str]:
    return list(Event.objects.filter(project=project).values_list("message_id", flat=True))


def test_several_workers_keep_each_customers_calls_in_order(workers):
    project = ProjectFactory()
    customers = [f"order-{n}" for n in range(200)]
    steps = 25
    now = clock.now()  # one timestamp for every call: only the order they are applied in decides
    for step in range(1, steps + 1):
        for first in range(0, len(customers), 100):  # requests of 100 customers, spanning partitions
            _enqueue(
                project,
                [
                    message
                    for customer in customers[first : first + 100]
                    for message in (
                        _call("identify", customer, f"{customer}-i{step}", now, traits={"step": step}),
                        _call("track", customer, f"{customer}-t{step}", now, event="step", properties={"step": step}),
                    )
                ],
            )
    assert len({partition_of({"customer_id": c}) for c in customers}) > 1
    started = workers(3)
    _drain(started, project)

    assert sum(1 for worker in started if worker.batches(project.pk)) >= 2, "one worker did all the batches"
    for customer in Customer.objects.filter(project=project):
        assert customer.traits == {"step": steps}, customer.external_id
        timeline, _ = customer_events_page(project, customer, limit=steps, name="step")
        assert [event.properties["step"] for event in timeline] == list(range(steps, 0, -1)), customer.external_id
    assert Customer.objects.filter(project=project).count() == len(customers)
    assert len(_stored_message_ids(project)) == len(customers) * steps * 2


def _pairs(count: int) -> list[tuple[str, str]]:
    """(primary, secondary) customer ids whose calls fall in different partitions."""
    pairs = []
    n = 0
    while len(pairs) < count:
        primary, secondary = f"primary-{n}", f"secondary-{n}"
        if partition_of({"customer_id": primary}) != partition_of({"customer_id": secondary}):
            pairs.append((primary, secondary))
        n += 1
    return pairs


def test_a_merge_racing_with_both_customers_events_in_their_partitions_ends_with_all_on_the_primary(workers):
    project = ProjectFactory()
    pairs = _pairs(30)
    now = clock.now()
    _enqueue(
        project,
        [
            _call("identify", customer, f"{customer}-identify", now, traits={"from": customer, customer: True})
            for pair in pairs
            for customer in pair
        ],
    )
    started = workers(3)
    _drain(started, project)

    rounds = 40
    expected = set(_stored_message_ids(project))
    for step in range(rounds):
        calls = [
            _call("track", customer, f"{customer}-{step}", now, event="step", properties={"step": step})
            for pair in pairs
            for customer in pair
        ]
        if step == rounds // 2:  # merges in the middle: the secondaries' events before and after race with them
            calls += [
                _call("merge", primary, f"{primary}-merge", now, previous={"customer_id": secondary})
                for primary, secondary in pairs
            ]
        expected.update(call["message_id"] for call in calls)
        _enqueue(project, calls)
    _drain(started, project)

    stored = _stored_message_ids(project)
    assert len(stored) == len(set(stored)) == len(expected)
    assert set(stored) == expected
    assert not FailedCommand.objects.filter(project=project).exists()
    assert sorted(Customer.objects.filter(project=project).values_list("external_id", flat=True)) == sorted(
        primary for primary, _ in pairs
    )
    for primary, secondary in pairs:
        customer = Customer.objects.get(project=project, external_id=primary)
        steps = Event.objects.filter(customer=customer, name="step").values_list("message_id", flat=True)
        assert sorted(steps) == sorted(f"{c}-{step}" for c in (primary, secondary) for step in range(rounds))
        assert customer.traits[primary] is True and customer.traits[secondary] is True
        assert customer.identities.filter(value=secondary).exists()


def test_a_worker_killed_mid_batch_in_one_partition_leaves_the_others_going_and_loses_nothing(workers):
    project = ProjectFactory()
    now = clock.now()
    expected = set()
    for c in range(60):
        calls = [
            _call(
                "track" if i % 5 else "identify",
                f"user-{(c * 500 + i) % 997}",
                f"kill-{c}-{i}",
                now,
                event="purchase" if i % 5 else "",
                traits=None if i % 5 else {"plan": "pro"},
                properties={"amount": i},
            )
            for i in range(500)
        ]
        expected.update(call["message_id"] for call in calls)
        _enqueue(project, calls)
    victim, survivor = workers(2)
    victim.wake(project.pk)
    # Kill it once it has committed a batch of this project and has more to do: its next batch is
    # then in flight, inside its transaction, in its partition.
    wait_for(
        lambda: victim.batches(project.pk) and Command.objects.filter(project=project).count() > 8,
        timeout=120,
        what=f"the first worker to commit a batch\n{victim.log_tail()}",
    )
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=10)
    at_kill = Event.objects.filter(project=project).count()
    assert 0 < at_kill < len(expected)

    survivor.wake(project.pk)
    wait_for(
        lambda: Event.objects.filter(project=project).count() > at_kill,
        timeout=60,
        what=f"the other worker to go on\n{survivor.log_tail()}",
    )
    _drain([survivor], project)

    stored = _stored_message_ids(project)
    assert len(stored) == len(expected)
    assert set(stored) == expected
    assert Customer.objects.filter(project=project).count() == 997
    assert not FailedCommand.objects.filter(project=project).exists()


class OtherPartition(threading.Thread):
    """Process one partition in a thread of its own (its own database connection)."""

    def __init__(self, project_id: int, partition: int):
        super().__init__(daemon=True)
        self.project_id, self.partition, self.error = project_id, partition, None

    def run(self) -> None:
        try:
            while commands_process(project_id=self.project_id, partition=self.partition).commands:
                pass
        except Exception as exc:  # shown by the test
            self.error = exc
        finally:
            connection.close()


def _while_held(signal, other: OtherPartition, run_held) -> None:
    """Run `run_held()`; when it sends `signal` (inside its transaction), start `other` and give it
    3 s to finish before going on."""

    def hold(sender, **kwargs):
        if not other.is_alive() and other.ident is None:
            other.start()
            other.join(timeout=3)

    signal.connect(hold, dispatch_uid="tests.partitions.hold")
    try:
        run_held()
    finally:
        signal.disconnect(dispatch_uid="tests.partitions.hold")
    other.join(timeout=30)
    assert not other.is_alive() and other.error is None, other.error


def test_an_event_of_a_customer_being_merged_waits_for_the_merge_and_lands_on_the_primary():
    project = ProjectFactory()
    ((primary, secondary),) = _pairs(1)
    now = clock.now()
    _enqueue(project, [_call("identify", c, f"{c}-identify", now, traits={c: True}) for c in (primary, secondary)])
    while commands_process(project_id=project.pk).commands:
        pass
    _enqueue(project, [_call("merge", primary, "merge", now, previous={"customer_id": secondary})])
    _enqueue(project, [_call("track", secondary, "late", now, event="late")])

    # The merge batch is held after moving the secondary's events and before deleting it; the
    # event's batch, in the secondary's partition, must not slip its event onto the secondary then.
    _while_held(
        customer_merged,
        OtherPartition(project.pk, partition_of({"customer_id": secondary})),
        lambda: commands_process(project_id=project.pk, partition=partition_of({"customer_id": primary})),
    )
    assert Event.objects.get(project=project, message_id="late").customer.external_id == primary
    assert list(Customer.objects.filter(project=project).values_list("external_id", flat=True)) == [primary]


def test_an_id_bound_by_two_partitions_at_once_ends_on_one_customer():
    project = ProjectFactory()
    now = clock.now()
    customer_id = next(
        f"u-{n}"
        for n in range(100)
        if partition_of({"customer_id": f"u-{n}"}) != partition_of({"anonymous_id": "anon-1"})
    )
    _enqueue(
        project, [_call("identify", customer_id, "identify", now, traits={"plan": "pro"}) | {"anonymous_id": "anon-1"}]
    )
    _enqueue(project, [_call("track", None, "anonymous", now, event="viewed") | {"anonymous_id": "anon-1"}])

    # The identify's batch has bound both ids, uncommitted, when the anonymous call's batch runs.
    _while_held(
        batch_stored,
        OtherPartition(project.pk, partition_of({"anonymous_id": "anon-1"})),
        lambda: commands_process(project_id=project.pk, partition=partition_of({"customer_id": customer_id})),
    )
    (customer,) = Customer.objects.filter(project=project)
    assert customer.external_id == customer_id
    assert set(Event.objects.filter(project=project).values_list("message_id", "customer_id")) == {
        ("identify", customer.pk),
        ("anonymous", customer.pk),
    }
