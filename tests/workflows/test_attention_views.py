"""Runs needing attention: runs past their wake time, interrupted webhooks, failed runs; retry,
skip step and end run from the page, recorded in the run's history with who did it."""

import re
from datetime import timedelta

import pytest

from organizations.models import Role
from tests.conftest import signed_in_client
from tests.factories import MembershipFactory, ProjectFactory
from timonier import clock
from workflows.models import Run, RunStep, WebhookAttempt

from .engine import active_workflow, definition, drive, hook_flow, identify, run_engine, runs_of, track
from .receiver import Reply, allowed_receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(project):
    user = MembershipFactory(organization=project.organization, role=Role.MEMBER).user
    client = signed_in_client(user)
    client.user = user
    return client


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    with allowed_receiver(settings) as receiver:
        yield receiver


def url(project, path=""):
    return f"/o/{project.organization.slug}/{project.slug}/{path}"


def attention_page(client, project) -> str:
    return client.get(url(project, "workflows/attention")).content.decode()


def listed_runs(page: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-run-id="(\d+)" data-testid="attention-run"', page)]


def delayed_flow() -> dict:
    return definition(
        {"type": "event", "event_name": "purchase"},
        [
            {"id": "wait", "type": "delay", "duration": {"value": 1, "unit": "hours"}},
            {"id": "tag", "type": "update_attribute", "action": "set", "trait": "followed_up", "value": True},
        ],
        [("wait", "tag")],
    )


def waiting_run(project) -> Run:
    workflow = active_workflow(project, delayed_flow(), name="Follow-up")
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "purchase")
    run_engine(project)
    (run,) = runs_of(workflow)
    assert run.status == Run.Status.WAITING
    return run


def test_a_run_on_time_is_not_listed_and_one_past_its_wake_time_is(client, project, travel):
    run = waiting_run(project)
    assert listed_runs(attention_page(client, project)) == []

    travel.advance(hours=2)  # the executor did not run meanwhile

    page = attention_page(client, project)
    assert listed_runs(page) == [run.pk]
    assert "Past its wake time" in page and "Follow-up" in page


def test_skip_step_moves_a_late_run_on_and_records_who_did_it(client, project, travel):
    run = waiting_run(project)
    travel.advance(hours=2)

    response = client.post(url(project, f"workflows/runs/{run.pk}/action"), {"action": "skip"})

    assert response.status_code == 302
    run.refresh_from_db()
    assert (run.current_step, run.status) == ("tag", Run.Status.ACTIVE)
    delay = RunStep.objects.get(run=run, step_id="wait")
    assert delay.actor == client.user and delay.outcome.startswith("skipped") and delay.left_at is not None
    assert listed_runs(attention_page(client, project)) == []
    customer_page = client.get(url(project, f"customers/{run.customer_id}")).content.decode()
    assert f"by {client.user.email}" in customer_page


def test_end_run_ends_it_with_who_did_it(client, project, travel):
    run = waiting_run(project)
    travel.advance(hours=2)

    client.post(url(project, f"workflows/runs/{run.pk}/action"), {"action": "end"})

    run.refresh_from_db()
    assert run.status == Run.Status.EXITED and run.ended_at is not None
    assert RunStep.objects.get(run=run, step_id="wait").actor == client.user
    assert listed_runs(attention_page(client, project)) == []


def test_an_interrupted_webhook_is_listed_and_retry_sends_it_with_the_same_webhook_id(
    client, project, travel, receiver
):
    workflow = active_workflow(project, hook_flow(receiver), name="Notify")
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "purchase", item="Mug")
    run_engine(project)
    # The worker claimed the attempt (queued → sending) and died before recording an answer.
    attempt = WebhookAttempt.objects.get()
    WebhookAttempt.objects.filter(pk=attempt.pk).update(status=WebhookAttempt.Status.SENDING, started_at=clock.now())
    travel.advance(minutes=5)
    drive(project)
    (run,) = runs_of(workflow)

    page = attention_page(client, project)
    assert listed_runs(page) == [run.pk]
    assert "webhook interrupted" in page and "attempt 1: Interrupted" in page

    client.post(url(project, f"workflows/runs/{run.pk}/action"), {"action": "retry"})
    drive(project)

    (request,) = receiver.requests
    assert request.headers["webhook-id"] == attempt.webhook_id
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED
    assert RunStep.objects.get(run=run, step_id="notify").actor == client.user
    assert listed_runs(attention_page(client, project)) == []


def test_a_run_failed_by_its_webhook_is_shown_without_actions(client, project, travel, receiver):
    workflow = active_workflow(project, hook_flow(receiver), name="Notify")
    receiver.default = Reply(500)
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "purchase", item="Mug")
    for _ in range(3):
        drive(project)
        travel.advance(hours=1)
    (run,) = runs_of(workflow)
    assert run.status == Run.Status.FAILED

    page = attention_page(client, project)

    assert listed_runs(page) == []
    failed = re.search(rf'data-run-id="{run.pk}" data-testid="failed-run">(.*?)</section>', page, re.S).group(1)
    assert "webhook_failed" in failed and "HTTP 500" in failed and "<button" not in failed
    travel.advance(days=8)
    assert f'data-run-id="{run.pk}"' not in attention_page(client, project)


def test_an_outsider_cannot_act_on_a_run(project, travel):
    run = waiting_run(project)
    travel.advance(hours=2)
    other = ProjectFactory()
    outsider = signed_in_client(MembershipFactory(organization=other.organization, role=Role.OWNER).user)

    assert outsider.post(url(project, f"workflows/runs/{run.pk}/action"), {"action": "end"}).status_code == 404
    assert outsider.post(url(other, f"workflows/runs/{run.pk}/action"), {"action": "end"}).status_code == 404
    assert outsider.get(url(project, "workflows/attention")).status_code == 404
    run.refresh_from_db()
    assert run.status == Run.Status.WAITING
    assert timedelta(0) < clock.now() - run.wake_at
