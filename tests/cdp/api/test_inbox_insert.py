"""The inbox INSERT (on PostgreSQL one statement of arrays bound in the server, elsewhere a VALUES
list): every piece of a request stored whole, in the request's order, with its command_id."""

import orjson
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cdp import inbox
from cdp.models import Command
from tests.factories import ProjectFactory
from timonier import clock

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("partitions", [8, 32])  # rows up to VALUES_MAX_ROWS, and more (arrays on PostgreSQL)
def test_a_request_over_every_partition_is_stored_in_its_order(settings, monkeypatch, partitions):
    monkeypatch.setattr(inbox, "wake", lambda *args, **kwargs: None)  # no worker here
    settings.INGEST_PARTITIONS = partitions
    project = ProjectFactory()
    messages = [
        {"type": "track", "customer_id": f"u-{n}", "event": "e", "properties": {"n": n, "text": 'a "quoted" \\ ünï'}}
        for n in range(200)
    ]
    at = clock.now()

    with CaptureQueriesContext(connection) as queries:  # Django's query log too
        command_id = inbox.commands_enqueue(project_id=project.pk, messages=messages, received_at=at)

    assert [query["sql"].split()[0] for query in queries.captured_queries] == ["INSERT"]

    rows = list(Command.objects.filter(project=project).order_by("id"))
    first_seen = list(dict.fromkeys(inbox.partition_of(m) for m in messages))
    assert [row.partition for row in rows] == first_seen and len(rows) == partitions  # ids in the request's order
    assert {row.command_id for row in rows} == {command_id} and {row.received_at for row in rows} == {at}
    stored = {row.partition: orjson.loads(row.payload) for row in rows}
    assert [row.message_count for row in rows] == [len(stored[row.partition]) for row in rows]
    for partition, piece in stored.items():
        assert piece == [m for m in messages if inbox.partition_of(m) == partition]  # whole, in order
