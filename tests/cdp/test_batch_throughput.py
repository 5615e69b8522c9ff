"""What makes the batch processor fast, kept honest: a batch of new calls does not look up their
message ids (the unique constraint finds a repeat, and the batch runs again looking), and one
task keeps two batches of different partitions in flight. Real PostgreSQL (SQLite has one
writer and an insert that ignores repeats, so neither applies there)."""

import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cdp import batches, inbox, tasks
from cdp.inbox import commands_enqueue, partition_of
from cdp.models import Command, Customer, Event, FailedCommand
from cdp.processing import commands_process
from cdp.signals import batch_stored
from cdp.tasks import process_commands_task
from tests.factories import ProjectFactory
from timonier import clock

LOOKUP = "SELECT message_id FROM cdp_event"


@pytest.fixture(autouse=True)
def _postgresql(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only: SQLite looks every message id up, and has one writer")
    monkeypatch.setattr(batches, "_duplicate_seen_at", None)  # no repeat seen by this process yet
    yield
    tasks._helpers.release()  # the helper threads' connections, kept between tasks, closed


def _track(customer_id: str, message_id: str, **properties) -> dict:
    return {
        "type": "track",
        "customer_id": customer_id,
        "anonymous_id": None,
        "event": "purchase",
        "traits": None,
        "properties": properties,
        "context": {},
        "timestamp": clock.now().isoformat(),
        "message_id": message_id,
        "previous": None,
        "group_id": None,
    }


def _enqueue(project, messages: list[dict]) -> None:
    commands_enqueue(project_id=project.pk, messages=messages, received_at=clock.now())


def _drain(project) -> list:
    results = []
    while (result := commands_process(project_id=project.pk)) is not None and result.commands:
        results.append(result)
    return results


def _lookups(queries) -> list[str]:
    return [q["sql"] for q in queries if LOOKUP in q["sql"]]


@pytest.mark.django_db
def test_a_batch_of_new_calls_stores_them_without_looking_their_message_ids_up():
    project = ProjectFactory()
    _enqueue(project, [_track(f"c-{n}", f"m-{n}") for n in range(50)])
    with CaptureQueriesContext(connection) as queries:
        results = _drain(project)
    assert sum(r.events for r in results) == 50 and sum(r.duplicates for r in results) == 0
    assert _lookups(queries) == []
    assert Event.objects.filter(project=project).count() == 50


@pytest.mark.django_db
def test_a_call_stored_before_is_stored_once_and_the_batch_around_it_is_kept():
    project = ProjectFactory()
    _enqueue(project, [_track("ann", "m-1", n=1)])
    _drain(project)
    # The same customer, so the repeat and the new call are in one partition and one batch.
    _enqueue(project, [_track("ann", "m-1", n=1), _track("ann", "m-2", n=2)])
    with CaptureQueriesContext(connection) as queries:
        (result,) = _drain(project)
    assert (result.messages, result.duplicates, result.events) == (2, 1, 1)
    assert len(_lookups(queries)) == 1  # the run again, after the COPY failed on the repeat
    assert sorted(Event.objects.filter(project=project).values_list("message_id", "properties__n")) == [
        ("m-1", 1),
        ("m-2", 2),
    ]
    assert not Command.objects.filter(project=project).exists()
    assert not FailedCommand.objects.filter(project=project).exists()
    assert Customer.objects.filter(project=project).count() == 1

    # Repeats come in bursts (a client retrying): for a while, batches look first.
    _enqueue(project, [_track("ann", "m-3")])
    with CaptureQueriesContext(connection) as queries:
        _drain(project)
    assert len(_lookups(queries)) == 1


@pytest.mark.django_db(transaction=True)
def test_one_task_keeps_batches_of_two_partitions_in_flight_at_once(monkeypatch):
    monkeypatch.setattr(inbox, "wake", lambda *args, **kwargs: None)  # no live worker takes these
    project = ProjectFactory()
    customers = [f"c-{n}" for n in range(40)]
    partitions = {partition_of({"customer_id": c}) for c in customers}
    assert len(partitions) > 2
    _enqueue(project, [_track(c, f"m-{c}") for c in customers])
    first = partition_of({"customer_id": customers[0]})

    # Each batch waits (a few seconds at most) inside its transaction for a batch of another
    # thread to be inside one too: with one batch at a time, none ever sees another.
    inside: set[int] = set()
    overlapped = threading.Event()
    lock = threading.Lock()

    def wait_for_company(sender, **kwargs):
        with lock:
            inside.add(threading.get_ident())
            if len(inside) > 1:
                overlapped.set()
        overlapped.wait(timeout=3)
        with lock:
            inside.discard(threading.get_ident())

    batch_stored.connect(wait_for_company, dispatch_uid="tests.throughput.company")
    try:
        process_commands_task(project.pk, first)  # as a worker runs it, in this thread
    finally:
        batch_stored.disconnect(dispatch_uid="tests.throughput.company")
    assert overlapped.is_set(), "no two batches were ever in flight at once"
    assert not Command.objects.filter(project=project).exists()
    assert sorted(Event.objects.filter(project=project).values_list("message_id", flat=True)) == sorted(
        f"m-{c}" for c in customers
    )


@pytest.mark.django_db
def test_a_batch_reads_only_the_commands_it_takes(monkeypatch):
    monkeypatch.setattr(batches, "MAX_MESSAGES_PER_BATCH", 10)
    project = ProjectFactory()
    _enqueue(project, [_track("ann", f"big-{n}") for n in range(12)])  # alone over the cut: taken alone
    for first in range(0, 20, 4):
        _enqueue(project, [_track("ann", f"m-{n}") for n in range(first, first + 4)])
    read: list[int] = []

    def count_claimed(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("SELECT id, received_at, payload FROM cdp_command"):
            read.append(context["cursor"].rowcount)
        return result

    with connection.execute_wrapper(count_claimed):
        results = _drain(project)
    assert [(r.commands, r.messages) for r in results] == [(1, 12), (2, 8), (2, 8), (1, 4)]
    assert read == [1, 2, 2, 1]  # rows sent by PostgreSQL: the payloads used, no more
    assert Event.objects.filter(project=project).count() == 32


@pytest.mark.django_db(transaction=True)
def test_the_helper_thread_keeps_its_database_connection_from_one_task_to_the_next(monkeypatch):
    """A wake-up storm runs thousands of tasks: a new thread, and so a new PostgreSQL connection
    (a backend forked and authenticated), per task was most of the worker's time."""
    monkeypatch.setattr(inbox, "wake", lambda *args, **kwargs: None)
    project = ProjectFactory()
    backends: dict[str, set[int]] = {}

    def note_backend(sender, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backends.setdefault(threading.current_thread().name, set()).add(cursor.fetchone()[0])

    batch_stored.connect(note_backend, dispatch_uid="tests.throughput.backend")
    try:
        for round_ in range(3):
            customers = [f"r{round_}-{n}" for n in range(40)]
            _enqueue(project, [_track(c, f"m-{c}") for c in customers])
            first = partition_of({"customer_id": customers[0]})
            process_commands_task(project.pk, first)
            assert not Command.objects.filter(project=project).exists()
    finally:
        batch_stored.disconnect(dispatch_uid="tests.throughput.backend")
    helpers = {name: pids for name, pids in backends.items() if name.startswith("cdp-drain")}
    assert helpers, backends  # the helper took batches of other partitions
    assert all(len(pids) == 1 for pids in helpers.values()), helpers
    assert Event.objects.filter(project=project).count() == 120


@pytest.mark.django_db(transaction=True)
def test_a_task_takes_a_batch_of_each_partition_in_turn_so_none_waits_for_another_to_empty(monkeypatch):
    """Under a steady load a partition is never empty: a task draining its own until the deadline
    left the calls of the other partitions waiting 20 s."""
    monkeypatch.setattr(inbox, "wake", lambda *args, **kwargs: None)
    monkeypatch.setattr(batches, "MAX_MESSAGES_PER_BATCH", 10)
    monkeypatch.setattr(tasks, "DRAIN_THREADS", 1)  # this thread alone: the order is its own
    project = ProjectFactory()
    customers = [f"c-{n}" for n in range(400)]
    by_partition: dict[int, list[str]] = {}
    for customer in customers:
        by_partition.setdefault(partition_of({"customer_id": customer}), []).append(customer)
    busy, other = sorted(by_partition, key=lambda p: -len(by_partition[p]))[:2]
    for n in range(4):  # four requests to the busy partition, queued first: a batch each
        _enqueue(project, [_track(c, f"m-{c}-{n}") for c in by_partition[busy]])
    _enqueue(project, [_track(c, f"m-{c}") for c in by_partition[other][:5]])
    order: list[int] = []

    def note(sender, *, events, **kwargs):
        order.append(partition_of({"customer_id": Customer.objects.get(pk=events[0][0]).external_id}))

    batch_stored.connect(note, dispatch_uid="tests.throughput.order")
    try:
        process_commands_task(project.pk, busy)
    finally:
        batch_stored.disconnect(dispatch_uid="tests.throughput.order")
    assert not Command.objects.filter(project=project).exists()
    assert order.count(busy) == 4 and order.count(other) == 1
    assert order.index(other) <= 1, order  # the other partition's batch came in the first round
