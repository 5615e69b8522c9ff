"""Webhook steps end to end against a real HTTP receiver on 127.0.0.1: signed per Standard
Webhooks, retried with backoff, a failure path, an interrupted request left for a person."""

import json
from datetime import timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from cdp.models import Customer
from timonier import clock
from workflows import services
from workflows.models import Run, RunStep, WebhookAttempt
from workflows.webhook_secrets import webhook_secret_reveal

from .engine import active_workflow, drive, hook_flow, identify, ingest, run_engine, runs_of, track
from .receiver import Reply, allowed_receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    with allowed_receiver(settings) as receiver:
        yield receiver


def test_a_webhook_is_signed_so_standardwebhooks_verifies_it_and_the_run_goes_on(project, receiver):
    # On the real clock: the verifier refuses a timestamp more than five minutes off its own.
    workflow = active_workflow(project, hook_flow(receiver, response_traits={"tier": "account.tier"}))
    receiver.reply(Reply(200, body=b'{"account": {"tier": "gold"}}'))
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "purchase", item="T-Shirt")
    drive(project)

    (request,) = receiver.requests
    assert request.method == "POST" and request.path == "/orders"
    assert json.loads(request.body) == {"customer": "u1", "item": "T-Shirt"}
    assert request.headers["x-shop"] == "u1" and request.headers["content-type"] == "application/json"
    Webhook(webhook_secret_reveal(project=project)).verify(request.body, request.headers)
    (run,) = runs_of(workflow)
    assert request.headers["webhook-id"] == f"run-{run.pk}-1"
    assert run.status == Run.Status.COMPLETED
    attempt = WebhookAttempt.objects.get(run=run)
    assert attempt.response_status == 200 and attempt.latency_ms is not None
    ingest(project)
    assert Customer.objects.get(external_id="u1").traits["tier"] == "gold"  # mapped from the response


def test_a_503_with_retry_after_is_retried_with_the_same_webhook_id(project, travel, receiver):
    workflow = active_workflow(project, hook_flow(receiver))
    receiver.reply(Reply(503, headers={"Retry-After": "120"}), Reply(204))
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "purchase", item="Mug")
    drive(project)
    (run,) = runs_of(workflow)
    assert run.status == Run.Status.WAITING and len(receiver.requests) == 1
    retry = WebhookAttempt.objects.get(run=run, number=2)
    assert retry.due_at >= clock.now() + timedelta(seconds=120)
    travel.move_to(retry.due_at)
    drive(project)
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED


def test_after_the_last_attempt_the_failure_output_is_taken_or_the_run_fails(project, travel, receiver):
    with_path = active_workflow(project, hook_flow(receiver, failure_step=True), name="With failure path")
    receiver.default = Reply(500)
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "purchase", item="Mug")
    for _ in range(4):
        drive(project)
        travel.advance(hours=2)
    (run,) = runs_of(with_path)
    assert len(receiver.requests) == 3  # WEBHOOK_MAX_ATTEMPTS
    assert run.status == Run.Status.COMPLETED
    outcomes = list(RunStep.objects.filter(run=run).order_by("seq").values_list("step_id", "outcome"))
    assert outcomes[0][0] == "notify" and outcomes[0][1].startswith("failed after 3 attempts")
    assert outcomes[1] == ("alert", "next")

    services.workflow_archive(workflow=with_path, user=None)
    without = active_workflow(project, hook_flow(receiver), name="Without")
    identify(project, "u2", email="u2@example.com")
    track(project, "u2", "purchase", item="Mug")
    for _ in range(4):
        drive(project)
        travel.advance(hours=2)
    (failed,) = runs_of(without)
    assert (failed.status, failed.exit_reason) == (Run.Status.FAILED, "webhook_failed")


def test_an_interrupted_request_is_not_sent_again_until_a_person_retries_it(project, travel, receiver):
    workflow = active_workflow(project, hook_flow(receiver))
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "purchase", item="Mug")
    run_engine(project)
    # The worker claimed the attempt (queued → sending) and died before recording an answer.
    attempt = WebhookAttempt.objects.get()
    WebhookAttempt.objects.filter(pk=attempt.pk).update(status=WebhookAttempt.Status.SENDING, started_at=clock.now())
    travel.advance(minutes=5)
    drive(project)
    (run,) = runs_of(workflow)
    attempt.refresh_from_db()
    assert attempt.status == WebhookAttempt.Status.INTERRUPTED
    assert run.attention and run.wake_at is None and receiver.requests == []
    travel.advance(hours=5)
    drive(project)
    assert receiver.requests == []  # still waiting for a person
    services.run_retry_step(run=run, user=None)
    drive(project)
    (request,) = receiver.requests
    assert request.headers["webhook-id"] == attempt.webhook_id
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED and not run.attention


def test_a_webhook_to_a_private_address_is_refused_and_takes_the_failure_path(project, travel, receiver, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = []  # the receiver is on 127.0.0.1: refused like any loopback address
    workflow = active_workflow(project, hook_flow(receiver, failure_step=True))
    identify(project, "u1", email="u1@example.com")
    track(project, "u1", "purchase", item="Mug")
    drive(project)
    (run,) = runs_of(workflow)
    assert receiver.requests == []
    attempt = WebhookAttempt.objects.get(run=run)
    assert attempt.status == WebhookAttempt.Status.FAILED and attempt.error.startswith("url: ")
    assert run.status == Run.Status.COMPLETED
