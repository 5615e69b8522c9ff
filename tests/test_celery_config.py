"""The Celery settings that make delivery at-least-once, and a beat schedule that names real tasks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from timonier.celery import BEAT_SCHEDULE, TimonierTask, app

ROOT = Path(__file__).resolve().parent.parent
TASK_MODULES = [f"{name}.tasks" for name in ("accounts", "organizations", "cdp", "workflows")]


@pytest.fixture(scope="module")
def registered_tasks():
    """The tasks a worker knows: what autodiscovery imports (as at worker start), bound to the app."""
    app.loader.import_default_modules()
    return app.tasks


def test_messages_are_acknowledged_after_the_task_finishes():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True


def test_a_worker_process_holds_one_message_at_a_time():
    assert app.conf.worker_prefetch_multiplier == 1


def test_unacknowledged_messages_are_not_redelivered_while_the_task_may_still_run():
    time_limit = app.conf.task_time_limit
    assert isinstance(time_limit, int) and time_limit > 0
    assert 0 < app.conf.task_soft_time_limit < time_limit
    assert app.conf.broker_transport_options["visibility_timeout"] > time_limit


def test_the_default_task_class_retries_a_bounded_number_of_times_with_backoff():
    task_cls = app.Task
    assert issubclass(task_cls, TimonierTask)
    assert isinstance(task_cls.max_retries, int) and 0 < task_cls.max_retries <= 10
    assert task_cls.retry_backoff
    assert 0 < task_cls.retry_backoff_max <= 3600
    assert task_cls.acks_late is True
    assert task_cls.reject_on_worker_lost is True


def test_the_beat_schedule_is_the_configured_one():
    assert app.conf.beat_schedule == BEAT_SCHEDULE
    assert BEAT_SCHEDULE


@pytest.mark.parametrize("entry", sorted(BEAT_SCHEDULE))
def test_every_beat_entry_names_a_registered_task(entry, registered_tasks):
    name = BEAT_SCHEDULE[entry]["task"]
    assert name in registered_tasks, f"{entry}: {name} is not a registered task"
    task = registered_tasks[name]
    # The project's shared tasks get the bounded-retry task class.
    assert isinstance(task, TimonierTask)
    assert 0 < task.max_retries <= 10


def _celery_env(**extra) -> dict:
    return {
        **os.environ,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "celery-config-test",
        "DJANGO_SETTINGS_MODULE": "timonier.settings",
        **extra,
    }


@pytest.fixture(scope="module")
def discovered_task_names():
    """The task names a fresh process knows after importing only `timonier.celery` and loading
    what the app itself loads at worker start. In this process the test run has already imported
    the task modules, so only a fresh one shows whether autodiscovery finds them."""
    code = (
        "import json\n"
        "from timonier.celery import app\n"
        "app.loader.import_default_modules()\n"
        "print(json.dumps(sorted(app.tasks)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_celery_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", TASK_MODULES)
def test_task_modules_are_found_by_autodiscovery(module, discovered_task_names):
    assert any(name.startswith(f"{module}.") for name in discovered_task_names), discovered_task_names


def test_the_filesystem_broker_is_the_atomic_transport(tmp_path):
    """With `filesystem://` (make run), messages go through timonier.broker's atomic writes."""
    env = {
        **os.environ,
        "CELERY_BROKER_URL": "filesystem://",
        "REDIS_URL": "",
        "TIMONIER_VAR_DIR": str(tmp_path),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "celery-config-test",
        "DJANGO_SETTINGS_MODULE": "timonier.settings",
    }
    code = (
        "from timonier.celery import app\n"
        "with app.connection_for_write() as conn:\n"
        "    print(type(conn.transport).__module__, type(conn.default_channel).__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["timonier.broker", "timonier.broker"]
