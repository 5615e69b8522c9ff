import re
import threading
from datetime import UTC, datetime

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client

from accounts.models import Authenticator, RecoveryCode, recovery_code_hash
from timonier import clock

from .conftest import signed_in_client
from .factories import UserFactory, recovery_codes, totp_code

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Every test client sends from 127.0.0.1: each test starts with that address's whole allowance."""
    cache.clear()


def _start_login(client: Client, email: str):
    return client.post("/login", {"email": email})


def test_login_with_email_then_code_lands_on_project_selector(user):
    client = Client()
    assert _start_login(client, user.email.upper())["Location"] == "/login/code"
    anonymous_session = client.cookies["sessionid"].value
    response = client.post("/login/code", {"code": totp_code(user)})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.cookies["sessionid"].value != anonymous_session  # rotated at login
    assert client.get("/").status_code == 200


def test_session_cookie_is_httponly_and_samesite(user):
    client = Client()
    _start_login(client, user.email)
    client.post("/login/code", {"code": totp_code(user)})
    cookie = client.cookies["sessionid"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"


def test_account_that_never_finished_setup_cannot_log_in():
    pending = UserFactory(is_active=False)
    client = Client()
    assert _start_login(client, pending.email)["Location"] == "/login/code"
    response = client.post("/login/code", {"code": "123456"})
    assert "That code is not valid" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_wrong_codes_are_refused_and_then_throttled_for_this_client(user):
    client = Client()
    _start_login(client, user.email)
    wrong = f"{(int(totp_code(user)) + 1) % 1_000_000:06d}"
    with clock.travel(datetime(2026, 12, 1, 9, 0, 15, tzinfo=UTC)):  # all in one 15-minute window
        response = client.post("/login/code", {"code": wrong})
        assert "That code is not valid" in response.content.decode()
        for _ in range(4):
            client.post("/login/code", {"code": wrong})
        response = client.post("/login/code", {"code": totp_code(user)})
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "Too many wrong codes" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_code_already_accepted_cannot_be_reused(user):
    code = totp_code(user)
    first = Client()
    _start_login(first, user.email)
    assert first.post("/login/code", {"code": code})["Location"] == "/"
    second = Client()
    _start_login(second, user.email)
    response = second.post("/login/code", {"code": code})
    assert response.status_code == 200
    assert "already used" in response.content.decode()


def test_code_from_adjacent_time_step_is_accepted(user):
    client = Client()
    _start_login(client, user.email)
    assert client.post("/login/code", {"code": totp_code(user, offset_steps=-1)})["Location"] == "/"


def test_code_two_steps_away_is_refused(user):
    client = Client()
    _start_login(client, user.email)
    assert client.post("/login/code", {"code": totp_code(user, offset_steps=-3)}).status_code == 200


def test_recovery_code_logs_in_once(user):
    token = recovery_codes(user)[0]
    client = Client()
    _start_login(client, user.email)
    response = client.post("/login/code", {"code": token})
    assert response["Location"] == "/"
    assert "9 recovery codes remain" in client.get("/").content.decode()

    again = Client()
    _start_login(again, user.email)
    assert "That code is not valid" in again.post("/login/code", {"code": token}).content.decode()
    assert RecoveryCode.objects.filter(code_set__user=user).count() == 9


def test_login_code_page_without_email_step_redirects():
    assert Client().get("/login/code")["Location"] == "/login"


def test_logout_requires_post_and_ends_the_session(user):
    client = signed_in_client(user)
    assert client.get("/logout").status_code == 405
    assert client.post("/logout")["Location"] == "/login"
    assert client.get("/")["Location"].startswith("/login")


def test_login_returns_to_the_page_asked_for(user):
    client = Client()
    assert client.get("/account")["Location"] == "/login?next=/account"
    client.get("/login?next=/account")
    _start_login(client, user.email)
    assert client.post("/login/code", {"code": totp_code(user)})["Location"] == "/account"


def test_login_ignores_an_offsite_next(user):
    client = Client()
    client.get("/login?next=https://evil.example/")
    _start_login(client, user.email)
    assert client.post("/login/code", {"code": totp_code(user)})["Location"] == "/"


def test_regenerating_recovery_codes_replaces_them(user):
    old = recovery_codes(user)
    client = signed_in_client(user)
    client.post("/account", {"action": "regenerate"})
    html = client.get("/account").content.decode()
    new = re.findall(r"<li>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</li>", html)
    stored = set(RecoveryCode.objects.filter(code_set__user=user).values_list("code_hash", flat=True))
    assert len(new) == 10 and stored == {recovery_code_hash(code) for code in new}
    assert not stored & {recovery_code_hash(code) for code in old}
    assert not any(code in client.get("/account").content.decode() for code in new)


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_logins_with_the_same_code_exactly_one_succeeds():
    user = UserFactory()
    code = totp_code(user)
    clients = [Client(), Client()]
    for client in clients:
        _start_login(client, user.email)
    barrier = threading.Barrier(2)
    results = []

    def submit(client):
        barrier.wait()
        try:
            results.append(client.post("/login/code", {"code": code}).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [200, 302]
    assert Authenticator.objects.get(user=user).last_t >= 0
