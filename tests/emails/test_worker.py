"""deliver() → on_commit → a real Celery worker → a real SMTP server, as in production."""

import time
from pathlib import Path

import pytest
from django.conf import settings

from emails.models import Delivery
from emails.services import deliver
from tests.factories import ProjectFactory
from tests.live import WORKER_START_TIMEOUT, CeleryWorker

from .conftest import identify, make_template


@pytest.fixture
def email_worker(live_db_env, smtp_server, tmp_path):
    """A worker on this process's own broker (where deliver() publishes), mailing the test's SMTP server."""
    env = {
        **live_db_env,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "EMAIL_URL": f"smtp://{smtp_server.host}:{smtp_server.port}",
        "PLATFORM_URL": "http://platform.test",
    }
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        env["TIMONIER_VAR_DIR"] = str(settings.VAR_DIR)  # the same broker folder as this process
    worker = CeleryWorker(env, tmp_path / "worker.log")
    try:
        worker.wait_until(worker.ready, WORKER_START_TIMEOUT, 'did not log "ready"')
        yield worker
    finally:
        worker.stop()


@pytest.mark.slow
def test_a_delivery_is_sent_by_the_worker(transactional_db, email_worker, smtp_server):
    project = ProjectFactory(name="Acme")
    template = make_template(project, publish=True)
    customer = identify(project, "ada", {"email": "ada@example.com", "name": "Ada"})
    delivery = deliver(version=template.published_version, customer=customer)  # autocommit: enqueued at once

    mail = smtp_server.wait_for("ada@example.com", timeout=30)
    assert mail.message["Subject"] == "Thanks Ada"
    assert "http://platform.test/e/o/" in mail.html
    deadline = time.monotonic() + 10
    while Delivery.objects.get(pk=delivery.pk).status != Delivery.Status.SENT:
        assert time.monotonic() < deadline, Path(email_worker.log_path).read_text()[-3000:]
        time.sleep(0.05)
