"""The Celery app: at-least-once delivery and the one periodic schedule.

Each setting below matters for not losing work; `tests/test_celery_config.py` asserts them:
- `task_acks_late`: a message is acknowledged after its task finishes, not when it is received,
  so a worker killed mid-task leaves the message to be redelivered.
- `task_reject_on_worker_lost`: a task whose worker process died is requeued, not marked failed.
- `worker_prefetch_multiplier = 1`: a worker holds one unacknowledged message per process, so a
  crash strands as little as possible.
- `visibility_timeout` (Redis): an unacknowledged message returns to the queue only after this
  long, which must exceed the longest task or it would run twice concurrently. The filesystem
  broker of `make run` has none: a killed worker's unacknowledged message is lost, which is why
  ingest keeps its work in the database (the inbox) and a periodic sweep, not in the broker.
Tasks must therefore be idempotent; retries are bounded and back off (see `TimonierTask`).
"""

import os
from datetime import timedelta

from celery import Celery, Task
from django.conf import settings
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "timonier.settings")


class TimonierTask(Task):
    """Default task class: bounded retries with exponential backoff and jitter."""

    autoretry_for = (ConnectionError, TimeoutError, OSError)
    max_retries = 5
    retry_backoff = 2
    retry_backoff_max = 600
    retry_jitter = True
    acks_late = True
    reject_on_worker_lost = True


app = Celery("timonier", task_cls=TimonierTask)


def _broker_transport_options() -> dict:
    visibility_timeout = settings.CELERY_TASK_MAX_SECONDS * 4
    options: dict = {"visibility_timeout": visibility_timeout}
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        folder = str(settings.CELERY_BROKER_DIR)
        for sub in ("queue", "processed", "control"):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        # One folder in and out; a 10 ms poll because the transport reads one message per poll.
        options.update(
            data_folder_in=os.path.join(folder, "queue"),
            data_folder_out=os.path.join(folder, "queue"),
            processed_folder=os.path.join(folder, "processed"),
            control_folder=os.path.join(folder, "control"),
            store_processed=False,
            polling_interval=0.01,
        )
    return options


def configure(celery_app: Celery) -> None:
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        # Our atomic-rename variant of the filesystem transport (see timonier/broker.py).
        celery_app.conf.broker_transport = "timonier.broker:Transport"
    celery_app.conf.update(
        broker_url=settings.CELERY_BROKER_URL,
        broker_transport_options=_broker_transport_options(),
        broker_connection_retry_on_startup=True,
        result_backend=settings.CELERY_RESULT_BACKEND,
        task_ignore_result=True,
        # Workflow execution has a queue of its own, so due runs never wait behind a flood of ingest
        # wake-ups (and the other way round); a worker started without -Q consumes both.
        # Each queue its own routing key: without one, Celery binds both with "celery" and a message
        # published to either lands in both.
        task_queues=(Queue("celery", routing_key="celery"), Queue("workflows", routing_key="workflows")),
        task_default_queue="celery",
        task_routes={"workflows.tasks.*": {"queue": "workflows"}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.CELERY_TASK_MAX_SECONDS,
        task_soft_time_limit=settings.CELERY_TASK_MAX_SECONDS - 30,
        task_always_eager=settings.CELERY_TASK_ALWAYS_EAGER,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        beat_schedule_filename=str(settings.VAR_DIR / "celerybeat-schedule"),
        beat_schedule=BEAT_SCHEDULE,
    )


# The one periodic schedule: every beat task of every app, with its interval.
BEAT_SCHEDULE = {
    "cdp-sweep-commands": {
        "task": "cdp.tasks.sweep_commands_task",
        "schedule": timedelta(seconds=1),
    },
    "segments-refresh-windows": {
        "task": "segments.tasks.segments_refresh_windows_task",
        "schedule": timedelta(seconds=settings.SEGMENT_WINDOW_REFRESH_SECONDS),
        # A run not started by the next beat is dropped: the next one does the same work.
        "options": {"expires": settings.SEGMENT_WINDOW_REFRESH_SECONDS},
    },
    "segments-reconcile": {
        "task": "segments.tasks.segments_reconcile_task",
        "schedule": timedelta(seconds=settings.SEGMENT_RECONCILE_SECONDS),
        "options": {"expires": settings.SEGMENT_RECONCILE_SECONDS},
    },
    "emails-sweep-deliveries": {
        "task": "emails.tasks.deliveries_sweep_task",
        "schedule": timedelta(minutes=1),
        "options": {"expires": 60},
    },
    # Workflows: enrolment from triggers (backstop of the ingest's wake-ups), due runs (how delays
    # fall due: at most a second late), and the hourly re-check of runs that watch data changes.
    "workflows-sweep-triggers": {
        "task": "workflows.tasks.triggers_sweep_task",
        "schedule": timedelta(seconds=1),
        "options": {"expires": 5},
    },
    "workflows-execute-runs": {
        "task": "workflows.tasks.runs_execute_task",
        "schedule": timedelta(seconds=1),
        "options": {"expires": 5},
    },
    "workflows-recheck-runs": {
        "task": "workflows.tasks.runs_recheck_task",
        "schedule": timedelta(hours=1),
        "options": {"expires": 3600},
    },
    "accounts-purge-expired-verifications": {
        "task": "accounts.tasks.purge_expired_verifications_task",
        "schedule": timedelta(hours=1),
    },
    "accounts-sweep-signup-requests": {
        "task": "accounts.tasks.signup_requests_sweep_task",
        "schedule": timedelta(seconds=30),
        "options": {"expires": 30},
    },
    "organizations-purge-expired-invitations": {
        "task": "organizations.tasks.purge_expired_invitations_task",
        "schedule": timedelta(hours=1),
    },
}

configure(app)
app.autodiscover_tasks()
