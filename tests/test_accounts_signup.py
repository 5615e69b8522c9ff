import base64
import re
import threading
import time
from urllib.parse import urlsplit

import pytest
from django.core import mail, signing
from django.core.cache import cache
from django.db import connection
from django.test import Client

from accounts.models import Authenticator, EmailVerification, RecoveryCode, User, recovery_code_hash
from accounts.services import signup_requests_answer_pending

from .factories import UserFactory, totp_code_for_secret

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Every test client sends from 127.0.0.1: each test starts with that address's whole allowance."""
    cache.clear()


def _signup(client: Client, email="jane@example.com", first="Jane", last="Doe"):
    response = client.post("/signup", {"email": email, "first_name": first, "last_name": last})
    signup_requests_answer_pending()  # what the worker does after the request's commit
    return response


def _link_from_outbox() -> str:
    body = mail.outbox[-1].body
    return re.search(r"http://\S+/verify/\S+", body).group(0)


def _verify_path(client: Client) -> str:
    return urlsplit(_link_from_outbox()).path


def _secret_hex_from_page(html: str) -> str:
    b32 = re.search(r'id="totp-secret"[^>]*><strong>([A-Z2-7 ]+)</strong>', html).group(1).replace(" ", "")
    return base64.b32decode(b32 + "=" * (-len(b32) % 8)).hex()


def test_signup_creates_inactive_user_and_emails_a_link():
    response = _signup(Client())
    assert response.status_code == 302 and response["Location"] == "/signup/sent"
    user = User.objects.get(email="jane@example.com")
    assert not user.is_active and not user.has_usable_password()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["jane@example.com"]
    assert "/verify/" in mail.outbox[0].body


def test_signup_with_registered_email_answers_check_your_inbox_and_emails_the_owner():
    UserFactory(email="jane@example.com", first_name="Jane")
    response = _signup(Client(), email="JANE@example.com", first="Mallory")
    assert response.status_code == 302 and response["Location"] == "/signup/sent"
    assert User.objects.filter(email__iexact="jane@example.com").get().first_name == "Jane"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["jane@example.com"]
    assert mail.outbox[0].subject == "You already have a Timonier account"
    assert "http://localhost:3010/login" in mail.outbox[0].body and "/verify/" not in mail.outbox[0].body


def test_signup_with_malformed_email_shows_error():
    response = _signup(Client(), email="jane@@example")
    assert response.status_code == 200
    assert "Enter a valid email address." in response.content.decode()
    assert not User.objects.exists()


def test_signup_requires_names():
    response = Client().post("/signup", {"email": "jane@example.com", "first_name": "", "last_name": ""})
    assert response.content.decode().count("This field is required.") == 2
    assert not User.objects.exists()


def test_verification_link_shows_qr_code_and_base32_secret():
    client = Client()
    _signup(client)
    response = client.get(_verify_path(client))
    html = response.content.decode()
    assert response.status_code == 200
    assert "<svg" in html and 'data-otpauth="otpauth://totp/Timonier' in html
    assert "issuer=Timonier" in html
    secret = _secret_hex_from_page(html)
    assert len(secret) == 40
    # Reloading in the same session shows the same secret; it lives only in that session.
    assert _secret_hex_from_page(client.get(_verify_path(client)).content.decode()) == secret
    assert not Authenticator.objects.exists()


def test_verify_with_correct_code_logs_in_and_shows_recovery_codes_once():
    client = Client()
    _signup(client)
    path = _verify_path(client)
    secret = _secret_hex_from_page(client.get(path).content.decode())
    response = client.post(path, {"code": totp_code_for_secret(secret)})
    assert response.status_code == 302 and response["Location"] == "/"
    user = User.objects.get(email="jane@example.com")
    assert user.is_active and user.email_verified_at is not None
    assert Authenticator.objects.get(user=user).key_hex == secret

    selector = client.get("/").content.decode()
    assert "Save your recovery codes" in selector
    shown = re.findall(r"<li>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</li>", selector)
    stored = set(RecoveryCode.objects.filter(code_set__user=user).values_list("code_hash", flat=True))
    assert len(shown) == 10 and stored == {recovery_code_hash(code) for code in shown}
    assert "Save your recovery codes" not in client.get("/").content.decode()


def test_secret_is_never_shown_again_and_link_is_single_use():
    client = Client()
    _signup(client)
    path = _verify_path(client)
    secret = _secret_hex_from_page(client.get(path).content.decode())
    client.post(path, {"code": totp_code_for_secret(secret)})
    for again in (client, Client()):
        response = again.get(path)
        html = response.content.decode()
        assert response.status_code == 410
        assert "already been used" in html
        assert "totp-secret" not in html and "otpauth" not in html


def test_expired_link_is_refused_with_a_way_to_resend(monkeypatch):
    client = Client()
    _signup(client)
    path = _verify_path(client)
    later = time.time() + 2 * 24 * 3600
    monkeypatch.setattr(signing.time, "time", lambda: later)
    response = client.get(path)
    assert response.status_code == 410
    html = response.content.decode()
    assert "expired" in html and "Resend verification email" in html


def test_tampered_link_is_refused():
    client = Client()
    _signup(client)
    response = client.get(_verify_path(client)[:-2] + "xx")
    assert response.status_code == 400
    assert "not valid" in response.content.decode()


def test_wrong_code_keeps_account_inactive_and_throttles():
    client = Client()
    _signup(client)
    path = _verify_path(client)
    secret = _secret_hex_from_page(client.get(path).content.decode())
    wrong = f"{(int(totp_code_for_secret(secret)) + 1) % 1_000_000:06d}"
    response = client.post(path, {"code": wrong})
    assert "That code is not valid" in response.content.decode()
    assert not User.objects.get().is_active
    for _ in range(5):
        response = client.post(path, {"code": wrong})
    assert "Too many wrong codes" in response.content.decode()
    # While locked, even the right code is not checked.
    response = client.post(path, {"code": totp_code_for_secret(secret)})
    assert "Too many wrong codes" in response.content.decode()
    assert not User.objects.get().is_active


def test_malformed_code_is_a_form_error():
    client = Client()
    _signup(client)
    path = _verify_path(client)
    client.get(path)
    response = client.post(path, {"code": "12ab"})
    assert "Enter the 6 digits" in response.content.decode()


def test_resend_verification_sends_a_new_link_at_most_once_a_minute():
    client = Client()
    _signup(client)
    response = client.post("/signup/resend", {"email": "jane@example.com"})
    signup_requests_answer_pending()
    assert response.status_code == 302 and len(mail.outbox) == 1  # the first link is less than a minute old
    EmailVerification.objects.update(created_at=EmailVerification.objects.get().created_at.replace(year=2000))
    response = client.post("/signup/resend", {"email": "jane@example.com"})
    signup_requests_answer_pending()
    assert response.status_code == 302
    assert len(mail.outbox) == 2 and EmailVerification.objects.count() == 2


def test_forms_require_csrf_token():
    client = Client(enforce_csrf_checks=True)
    assert _signup(client).status_code == 403
    assert client.post("/login", {"email": "a@example.com"}).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_submissions_of_the_setup_code_exactly_one_succeeds():
    client = Client()
    _signup(client)
    path = _verify_path(client)
    secret = _secret_hex_from_page(client.get(path).content.decode())
    code = totp_code_for_secret(secret)
    cookie = client.cookies["sessionid"].value
    barrier = threading.Barrier(2)
    results = []

    def submit():
        other = Client()
        other.cookies["sessionid"] = cookie
        barrier.wait()
        try:
            response = other.post(path, {"code": code})
            results.append(response.get("Location") if response.status_code == 302 else response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # The loser is sent to log in, or refused: the winner already rotated the shared session (400),
    # or consumed the link before the loser's request read it (410, "used").
    assert len(results) == 2 and results.count("/") == 1
    assert [r for r in results if r != "/"][0] in ("/login", 400, 410)
    assert Authenticator.objects.count() == 1
    assert RecoveryCode.objects.count() == 10
