"""A project's webhook signing secret: made on first use, encrypted at rest, rotated with overlap."""

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from tests.factories import ProjectFactory
from timonier import clock
from timonier.secrets import decrypt
from workflows.models import WebhookSecret
from workflows.webhook_secrets import webhook_secret_reveal, webhook_secret_rotate, webhook_signing_secrets
from workflows.webhooks import sign

pytestmark = pytest.mark.django_db

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def test_the_first_use_makes_one_standard_webhooks_secret_that_stays():
    project = ProjectFactory()
    [secret] = webhook_signing_secrets(project=project)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    Webhook(secret)  # the receivers' library accepts it
    assert webhook_signing_secrets(project=project) == [secret]
    assert webhook_secret_reveal(project=project) == secret
    assert WebhookSecret.objects.filter(project=project).count() == 1


def test_revealing_first_makes_the_secret_signing_then_uses():
    project = ProjectFactory()
    revealed = webhook_secret_reveal(project=project)
    assert webhook_signing_secrets(project=project) == [revealed]


def test_each_project_has_its_own_secret():
    assert webhook_secret_reveal(project=ProjectFactory()) != webhook_secret_reveal(project=ProjectFactory())


def test_the_secret_is_encrypted_at_rest():
    project = ProjectFactory()
    secret = webhook_secret_reveal(project=project)
    stored = WebhookSecret.objects.values_list("secret", flat=True).get(project=project)
    assert "whsec_" not in stored and secret.removeprefix("whsec_") not in stored
    assert decrypt(stored) == secret


def test_rotation_keeps_the_previous_secret_signing_until_it_expires():
    project = ProjectFactory()
    with clock.travel(START) as traveller:
        old = webhook_secret_reveal(project=project)
        new = webhook_secret_rotate(project=project)
        assert new != old and new.startswith("whsec_")
        assert webhook_secret_reveal(project=project) == new
        assert webhook_signing_secrets(project=project) == [new, old]

        traveller.advance(hours=23, minutes=59)
        assert webhook_signing_secrets(project=project) == [new, old]
        traveller.advance(minutes=1)
        assert webhook_signing_secrets(project=project) == [new]


def test_the_previous_secret_is_encrypted_at_rest_too():
    project = ProjectFactory()
    old = webhook_secret_reveal(project=project)
    webhook_secret_rotate(project=project)
    row = WebhookSecret.objects.get(project=project)
    assert "whsec_" not in row.previous_secret and decrypt(row.previous_secret) == old


def test_a_rotation_can_keep_the_previous_for_a_chosen_time():
    project = ProjectFactory()
    with clock.travel(START) as traveller:
        webhook_secret_reveal(project=project)
        webhook_secret_rotate(project=project, keep_previous_for=timedelta(hours=1))
        row = WebhookSecret.objects.get(project=project)
        assert (row.rotated_at, row.previous_expires_at) == (START, START + timedelta(hours=1))
        traveller.advance(hours=1, seconds=1)
        assert len(webhook_signing_secrets(project=project)) == 1


def test_rotating_twice_keeps_only_the_one_just_replaced():
    project = ProjectFactory()
    first = webhook_secret_reveal(project=project)
    second = webhook_secret_rotate(project=project)
    third = webhook_secret_rotate(project=project)
    assert webhook_signing_secrets(project=project) == [third, second]
    assert first not in webhook_signing_secrets(project=project)


def test_rotating_before_any_use_makes_both_secrets():
    project = ProjectFactory()
    new = webhook_secret_rotate(project=project)
    [current, previous] = webhook_signing_secrets(project=project)
    assert current == new and previous != new


def test_during_a_rotation_a_receiver_with_either_secret_verifies():
    project = ProjectFactory()
    old = webhook_secret_reveal(project=project)
    new = webhook_secret_rotate(project=project)
    now = clock.now()
    body = b'{"event": "purchase"}'
    headers = {
        "webhook-id": "run_7_step_2",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign(
            secrets=webhook_signing_secrets(project=project),
            webhook_id="run_7_step_2",
            timestamp=int(now.timestamp()),
            body=body,
        ),
    }
    assert Webhook(old).verify(body, headers) == {"event": "purchase"}
    assert Webhook(new).verify(body, headers) == {"event": "purchase"}
