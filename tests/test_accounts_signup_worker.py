"""Signup and resend forms are answered by a worker, not in their request: the response does the same
work, without SMTP, whether the address has an account, is invited or is refused (SIGNUP_MODE=invite),
and the emails still arrive at a real SMTP server once the worker has answered."""

import re
import socket
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import SignupRequest, User
from accounts.services import signup_request_answer, signup_requests_answer_pending
from accounts.tasks import signup_requests_sweep_task
from organizations.models import Invitation, Role
from tests.smtp import smtp_server  # noqa: F401 (the real SMTP server fixture)
from timonier import clock

from .factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

ADDRESSES = ("taken@example.com", "invited@example.com", "stranger@example.com")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


@pytest.fixture
def invite_only(settings):
    """SIGNUP_MODE=invite with an active owner, an account at taken@ and an invitation for invited@."""
    settings.SIGNUP_MODE = "invite"
    owner = MembershipFactory(role=Role.OWNER)
    UserFactory(email="taken@example.com")
    Invitation.objects.create(
        organization=owner.organization, email="invited@example.com", token_hash="h1", invited_by=owner.user
    )


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def _signup(email: str):
    return Client().post("/signup", {"email": email, "first_name": "Ann", "last_name": "Lee"})


def test_signup_answers_without_smtp_for_every_address_and_the_worker_sends_the_emails(
    invite_only,
    smtp_server,  # noqa: F811 (the fixture imported above)
    settings,
):
    smtp_port = settings.EMAIL_PORT
    settings.EMAIL_PORT = _closed_port()  # SMTP is down while the forms are posted
    for email in ADDRESSES:
        response = _signup(email)
        assert response.status_code == 302 and response["Location"] == "/signup/sent"
    assert smtp_server.messages == []
    assert not User.objects.filter(email="invited@example.com").exists()  # the worker's to make
    assert SignupRequest.objects.count() == 3

    settings.EMAIL_PORT = smtp_port  # the worker answers, with SMTP up
    assert signup_requests_answer_pending() == 3
    assert smtp_server.wait_for("taken@example.com").message["Subject"] == "You already have a Timonier account"
    invited = smtp_server.wait_for("invited@example.com")
    assert invited.message["Subject"] == "Verify your email for Timonier"
    assert any("/verify/" in link for link in invited.links())
    assert smtp_server.to("stranger@example.com") == []
    assert User.objects.filter(email="invited@example.com", is_active=False).exists()
    assert not User.objects.filter(email="stranger@example.com").exists()
    assert not SignupRequest.objects.exists()


def _statements(email: str) -> list[str]:
    """The SQL a signup request runs, without its values (ids, the address, the session key)."""
    with CaptureQueriesContext(connection) as queries:
        assert _signup(email).status_code == 302
    return [_shape(query["sql"]) for query in queries.captured_queries]


def _shape(sql: str) -> str:
    return re.sub(r"'[^']*'|\b\d+\b|\"s\d+_x\d+\"", "?", sql)  # values, and savepoint names


def test_a_signup_request_runs_the_same_statements_for_an_account_an_invitation_and_a_stranger(invite_only):
    taken, invited, stranger = (_statements(email) for email in ADDRESSES)
    assert taken == invited == stranger
    assert not any("accounts_user" in statement for statement in taken)


def test_a_resend_request_runs_the_same_statements_for_an_unfinished_account_and_no_account(settings):
    UserFactory(email="pending@example.com", is_active=False)
    statements = []
    for email in ("pending@example.com", "nobody@example.com"):
        with CaptureQueriesContext(connection) as queries:
            assert Client().post("/signup/resend", {"email": email}).status_code == 302
        statements.append([_shape(query["sql"]) for query in queries.captured_queries])
    assert statements[0] == statements[1]


def test_a_stored_form_is_answered_once(invite_only, smtp_server):  # noqa: F811
    _signup("invited@example.com")
    (request,) = SignupRequest.objects.all()
    assert signup_request_answer(request_id=request.pk) is True
    assert signup_request_answer(request_id=request.pk) is False  # a redelivered task
    smtp_server.wait_for("invited@example.com")
    assert len(smtp_server.to("invited@example.com")) == 1
    assert User.objects.filter(email="invited@example.com").count() == 1


def test_the_sweep_answers_a_form_whose_wake_up_was_lost(invite_only, smtp_server):  # noqa: F811
    with clock.travel(clock.now()) as traveller:
        _signup("taken@example.com")  # its task never ran (this test has no worker)
        signup_requests_sweep_task()
        assert SignupRequest.objects.count() == 1  # too young: its own task may be on its way
        traveller.advance(timedelta(seconds=31))
        signup_requests_sweep_task()
    assert not SignupRequest.objects.exists()
    assert smtp_server.wait_for("taken@example.com").message["Subject"] == "You already have a Timonier account"
