"""A worker killed in the middle of a batch loses nothing and duplicates nothing."""

import os
import signal

import pytest

from cdp.models import Command, Customer, Event
from cdp.storage import dumps
from organizations.models import Project
from tests.factories import ProjectFactory
from tests.live import CeleryWorker, wait_for
from timonier import clock

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

COMMANDS = 40
PER_COMMAND = 500


def _enqueue(project: Project) -> set[str]:
    message_ids = set()
    now = clock.now()
    for c in range(COMMANDS):
        messages = []
        for i in range(PER_COMMAND):
            message_id = f"crash-{c}-{i}"
            message_ids.add(message_id)
            messages.append(
                {
                    "type": "track" if i % 5 else "identify",
                    "customer_id": f"user-{(c * PER_COMMAND + i) % 997}",
                    "anonymous_id": None,
                    "event": "purchase" if i % 5 else "",
                    "traits": None if i % 5 else {"plan": "pro", "n": c},
                    "properties": {"amount": i},
                    "context": {},
                    "timestamp": now.isoformat(),
                    "message_id": message_id,
                    "previous": None,
                    "group_id": None,
                }
            )
        # Straight into the inbox, as the API stores it; the test wakes its own worker.
        Command.objects.create(project=project, payload=dumps(messages), message_count=len(messages))
    return message_ids


def _private_broker(live_db_env: dict, tmp_path) -> dict:
    """The live env with a broker of its own: the session's worker must not take these wake-ups."""
    env = dict(live_db_env)
    url = env["CELERY_BROKER_URL"]
    if url.startswith(("redis://", "rediss://")):
        env["CELERY_BROKER_URL"] = url.rsplit("/", 1)[0] + "/13"
    else:  # the filesystem broker lives in TIMONIER_VAR_DIR
        env["TIMONIER_VAR_DIR"] = str(tmp_path / "var")
    return env


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(live_db_env, tmp_path):
    project = ProjectFactory()
    expected = _enqueue(project)
    env = _private_broker(live_db_env, tmp_path)

    first = CeleryWorker(env, tmp_path / "worker-1.log")
    try:
        first.wait_until(first.ready, 60, 'did not log "ready"')
        first.wake(project.pk)
        # Kill it once it has committed at least one batch and still has work: the next batch is
        # then in flight, inside its transaction.
        wait_for(
            lambda: Event.objects.filter(project=project).exists() and Command.objects.filter(project=project).exists(),
            timeout=60,
            what=f"the first worker to commit a batch\n{first.log_tail()}",
        )
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
    finally:
        first.stop()
    stored_at_crash = Event.objects.filter(project=project).count()
    assert 0 < stored_at_crash < len(expected)

    second = CeleryWorker(env, tmp_path / "worker-2.log")
    try:
        second.wait_until(second.ready, 60, 'did not log "ready"')
        second.wait_processed(project.pk, timeout=120)
    finally:
        second.stop()

    stored = list(Event.objects.filter(project=project).values_list("message_id", flat=True))
    assert len(stored) == len(expected)
    assert set(stored) == expected
    assert Customer.objects.filter(project=project).count() == 997
    assert Customer.objects.get(project=project, external_id="user-0").traits["plan"] == "pro"
    assert not Command.objects.filter(project=project).exists()
