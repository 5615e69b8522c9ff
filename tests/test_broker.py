"""timonier.broker: the filesystem transport never shows a worker a half-written message."""

import json
import os

import pytest
from kombu import Connection
from kombu.transport import filesystem

from timonier import broker


@pytest.fixture
def connection(tmp_path):
    queue = tmp_path / "queue"
    queue.mkdir()
    options = {"data_folder_in": str(queue), "data_folder_out": str(queue), "store_processed": False}
    with Connection("filesystem://", transport=broker.Transport, transport_options=options) as conn:
        yield conn


def test_a_message_goes_through(connection):
    channel = connection.default_channel
    assert isinstance(channel, broker.Channel)
    channel._put("celery", {"body": "hello", "n": 1})
    assert channel._get("celery") == {"body": "hello", "n": 1}
    with pytest.raises(filesystem.Empty):
        channel._get("celery")


def test_every_message_comes_out_once(connection):
    # Order is by millisecond only, as in kombu: messages of the same millisecond come in any order.
    channel = connection.default_channel
    for n in range(20):
        channel._put("celery", {"n": n})
    assert sorted(channel._get("celery")["n"] for _ in range(20)) == list(range(20))
    with pytest.raises(filesystem.Empty):
        channel._get("celery")


def test_a_message_being_written_is_invisible_to_a_worker(connection, monkeypatch):
    channel = connection.default_channel
    seen_while_writing = []
    real_replace = os.replace

    def replace(src, dst):
        # Written but not yet renamed into place: a polling worker must find nothing.
        try:
            seen_while_writing.append(channel._get("celery"))
        except filesystem.Empty:
            seen_while_writing.append(None)
        return real_replace(src, dst)

    monkeypatch.setattr(broker.os, "replace", replace)
    channel._put("celery", {"body": "whole"})
    assert seen_while_writing == [None]
    assert channel._get("celery") == {"body": "whole"}


def test_kombus_own_transport_shows_a_worker_an_empty_file(tmp_path, monkeypatch):
    """Why timonier.broker exists: kombu creates the file, then serializes and writes into it."""
    queue = tmp_path / "queue"
    queue.mkdir()
    options = {"data_folder_in": str(queue), "data_folder_out": str(queue), "store_processed": False}
    with Connection("filesystem://", transport_options=options) as conn:
        channel = conn.default_channel
        real_dumps = filesystem.dumps
        errors = []

        def dumps(payload):
            # The file exists but is empty: a worker polling now reads it.
            try:
                channel._get("celery")
            except json.JSONDecodeError as exc:
                errors.append(exc)
            except filesystem.Empty:
                pass
            return real_dumps(payload)

        monkeypatch.setattr(filesystem, "dumps", dumps)
        channel._put("celery", {"body": "whole"})
    if not errors:
        pytest.skip("kombu's own filesystem transport writes atomically now: timonier/broker.py can go")
    assert isinstance(errors[0], json.JSONDecodeError)
