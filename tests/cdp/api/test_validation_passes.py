"""How much work checking a batch takes: each object encoded once, the batch's context checked once,
no walk of an object that cannot nest too deep. What a call is turned into (and every error) is
the subject of test_ingest_validation.py and test_input_hardening.py; the time it takes, of the bench."""

import uuid

import orjson
import pytest

from cdp import messages
from cdp.models import Command
from timonier import clock

pytestmark = pytest.mark.django_db


def _purchases(count: int) -> list[dict]:
    return [
        {"type": "track", "userId": f"u-{n}", "event": "purchase", "properties": {"item": "T-Shirt", "n": n}}
        for n in range(count)
    ]


class Counted:
    """orjson as cdp.messages sees it, counting the encodes; and the depth walks of cdp.messages."""

    def __init__(self, monkeypatch):
        self.dumps = 0
        self.walks = 0
        walk = messages._deeper_than

        class Orjson:
            JSONEncodeError = orjson.JSONEncodeError

            @staticmethod
            def dumps(value):
                self.dumps += 1
                return orjson.dumps(value)

        def counted_walk(value, limit):
            self.walks += 1
            return walk(value, limit)

        monkeypatch.setattr(messages, "orjson", Orjson)
        monkeypatch.setattr(messages, "_deeper_than", counted_walk)


def test_a_batch_of_100_calls_encodes_each_object_once_and_walks_none(monkeypatch):
    counted = Counted(monkeypatch)

    found = messages.normalize_batch({"batch": _purchases(100)}, received_at=clock.now(), max_items=1000)

    assert len(found) == 100 and found[7]["properties"] == {"item": "T-Shirt", "n": 7}
    assert counted.dumps == 100  # each call's properties, for their size and NUL checks
    assert counted.walks == 0  # one `{` each: it cannot nest deeper than 5


def test_the_batch_context_is_checked_once_for_all_its_calls(monkeypatch):
    counted = Counted(monkeypatch)
    context = {"library": {"name": "analytics-python", "version": "2.3"}}

    found = messages.normalize_batch(
        {"batch": _purchases(100), "context": context}, received_at=clock.now(), max_items=1000
    )

    assert [message["context"] for message in found] == [context] * 100
    assert counted.dumps == 101  # 100 properties, and the batch's context once (not once per call)


def test_an_object_with_brackets_in_its_strings_is_measured_by_its_real_depth(monkeypatch):
    counted = Counted(monkeypatch)
    flat = {"customer_id": "u", "event": "e", "properties": {"emoticons": "{[{[{[{[ ]}]}]}"}}

    message = messages.normalize(flat, received_at=clock.now(), default_type="track")

    assert message["properties"] == flat["properties"]
    assert counted.walks == 1  # more `{` and `[` than levels allowed: the exact walk decides
    deep = {"customer_id": "u", "event": "e", "properties": {"a": [[[[{"b": 1}]]]]}}
    with pytest.raises(messages.MessageError, match=r"^properties: exceeds maximum nesting depth of 5$"):
        messages.normalize(deep, received_at=clock.now(), default_type="track")


def test_a_bad_batch_context_is_refused_naming_the_first_call_that_takes_it():
    batch = {"batch": [{**_purchases(1)[0], "context": {}}, *_purchases(2)], "context": {"n": "\x00"}}

    with pytest.raises(messages.MessageError, match=r"^batch\[1\]\.context: contains a NUL character$"):
        messages.normalize_batch(batch, received_at=clock.now(), max_items=1000)


def test_calls_without_a_message_id_get_distinct_version_4_uuids(api):
    response = api.post("/v1/batch", {"batch": _purchases(200)})

    assert response.status_code == 200, response.content
    ids = [m["message_id"] for c in Command.objects.filter(project=api.project) for m in orjson.loads(c.payload)]
    assert len(ids) == len(set(ids)) == 200
    parsed = [uuid.UUID(message_id) for message_id in ids]
    assert {p.version for p in parsed} == {4} and {p.variant for p in parsed} == {uuid.RFC_4122}
    assert [str(p) for p in parsed] == ids  # the canonical spelling, as str(uuid4()) wrote them
