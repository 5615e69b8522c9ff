"""Accounts hardening: lockout, enumeration, secrets at rest, key rotation, rate limits, invite-only signup."""

import importlib
import re
from datetime import UTC, datetime, timedelta
from io import StringIO
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet
from django.core import mail
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client

from accounts.models import Authenticator, RecoveryCode, User, recovery_code_hash
from accounts.services import signup_requests_answer_pending
from organizations.models import Invitation, Role
from timonier import clock, secrets
from workflows.models import WebhookSecret

from .factories import MembershipFactory, ProjectFactory, UserFactory, recovery_codes, totp_code

pytestmark = pytest.mark.django_db

STRANGER, OWNER = "203.0.113.7", "198.51.100.20"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Every test client sends from 127.0.0.1: each test starts with that address's whole allowance."""
    cache.clear()


@pytest.fixture
def mid_window():
    """Time frozen 15 s into a minute (and a quarter hour), so a short test's requests fall in one window."""
    with clock.travel(datetime(2026, 12, 1, 9, 0, 15, tzinfo=UTC)) as traveller:
        yield traveller


def _client(address: str = "127.0.0.1") -> Client:
    return Client(REMOTE_ADDR=address)


def _login_as(client: Client, email: str):
    return client.post("/login", {"email": email})


def _wrong(user) -> str:
    return f"{(int(totp_code(user)) + 7) % 1_000_000:06d}"


def _page(response, *variable: str) -> str:
    """A page without what legitimately differs between two answers: CSRF tokens and the address typed."""
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())
    for text in variable:
        html = html.replace(text, "ADDRESS")
    return html


# --- Lockout -----------------------------------------------------------------------------------


def test_a_strangers_wrong_codes_do_not_lock_the_owner_out(mid_window, user):
    stranger = _client(STRANGER)
    _login_as(stranger, user.email)
    for _ in range(6):
        stranger.post("/login/code", {"code": _wrong(user)})
    assert "Too many wrong codes" in stranger.post("/login/code", {"code": _wrong(user)}).content.decode()

    owner = _client(OWNER)
    _login_as(owner, user.email)
    assert owner.post("/login/code", {"code": totp_code(user)})["Location"] == "/"


def test_a_strangers_wrong_codes_do_not_stop_the_owners_recovery_code(mid_window, user):
    stranger = _client(STRANGER)
    _login_as(stranger, user.email)
    for _ in range(6):
        stranger.post("/login/code", {"code": _wrong(user)})
    owner = _client(OWNER)
    _login_as(owner, user.email)
    assert owner.post("/login/code", {"code": recovery_codes(user)[0]})["Location"] == "/"


def test_one_client_is_locked_after_five_wrong_codes_until_the_window_ends(user):
    with clock.travel(datetime(2026, 12, 1, 9, 0, 7, tzinfo=UTC)) as traveller:
        client = _client(STRANGER)
        _login_as(client, user.email)
        for _ in range(5):
            assert client.post("/login/code", {"code": _wrong(user)}).status_code == 200
        locked = client.post("/login/code", {"code": totp_code(user)})
        assert locked.status_code == 429 and 0 < int(locked["Retry-After"]) <= 15 * 60
        assert "_auth_user_id" not in client.session
        traveller.advance(seconds=int(locked["Retry-After"]))
        assert client.post("/login/code", {"code": totp_code(user)})["Location"] == "/"


def test_a_recovery_code_passes_the_lock_of_its_own_client(mid_window, user):
    client = _client(STRANGER)
    _login_as(client, user.email)
    for _ in range(6):
        client.post("/login/code", {"code": _wrong(user)})
    assert client.post("/login/code", {"code": recovery_codes(user)[3]})["Location"] == "/"


def test_wrong_codes_from_many_clients_hit_the_devices_ceiling_but_a_recovery_code_still_signs_in(user, settings):
    settings.AUTHENTICATOR_MAX_FAILURES = 8
    for n in range(2):
        client = _client(f"203.0.113.{10 + n}")
        _login_as(client, user.email)
        for _ in range(4):
            client.post("/login/code", {"code": _wrong(user)})

    owner = _client(OWNER)
    _login_as(owner, user.email)
    refused = owner.post("/login/code", {"code": totp_code(user)})
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "Sign in with one of your recovery codes" in refused.content.decode()
    assert owner.post("/login/code", {"code": recovery_codes(user)[0]})["Location"] == "/"
    assert RecoveryCode.objects.filter(code_set__user=user).count() == 9


# --- Enumeration ---------------------------------------------------------------------------------


def test_login_answers_the_same_for_an_account_an_unfinished_one_and_no_account():
    active, pending = UserFactory(), UserFactory(is_active=False)
    pages = []
    for email in (active.email, pending.email, "nobody@example.com"):
        client = _client()
        response = _login_as(client, email)
        assert response.status_code == 302 and response["Location"] == "/login/code"
        wrong = client.post("/login/code", {"code": "000000"})
        assert wrong.status_code == 200
        pages.append(_page(wrong, email))
    assert pages[0] == pages[1] == pages[2]
    assert "That code is not valid" in pages[0]


def test_signup_answers_the_same_for_a_new_address_and_a_registered_one():
    UserFactory(email="taken@example.com")
    pages = []
    for email in ("taken@example.com", "new@example.com"):
        client = _client()
        response = client.post("/signup", {"email": email, "first_name": "Eve", "last_name": "Doe"})
        assert response.status_code == 302 and response["Location"] == "/signup/sent"
        pages.append(_page(client.get("/signup/sent"), email))
    signup_requests_answer_pending()  # what the worker does after the requests' commit
    assert pages[0] == pages[1] and "Check your inbox" in pages[0]
    by_recipient = {message.to[0]: message for message in mail.outbox}
    assert "/verify/" in by_recipient["new@example.com"].body
    assert by_recipient["taken@example.com"].subject == "You already have a Timonier account"
    assert "/login" in by_recipient["taken@example.com"].body


def test_resend_answers_the_same_for_every_address_and_sends_only_what_fits():
    UserFactory(email="active@example.com")
    pending = UserFactory(email="pending@example.com", is_active=False)
    answers = []
    for email in ("active@example.com", "pending@example.com", "nobody@example.com"):
        client = _client()
        response = client.post("/signup/resend", {"email": email})
        assert response.status_code == 302 and response["Location"] == "/signup/sent"
        answers.append(_page(client.get("/signup/sent"), email))
    signup_requests_answer_pending()
    assert answers[0] == answers[1] == answers[2]
    assert sorted(message.to[0] for message in mail.outbox) == ["active@example.com", "pending@example.com"]
    assert pending.email_verifications.count() == 1


def test_the_account_exists_email_goes_out_at_most_once_a_minute():
    UserFactory(email="taken@example.com")
    for _ in range(3):
        _client().post("/signup", {"email": "taken@example.com", "first_name": "Eve", "last_name": "Doe"})
        signup_requests_answer_pending()
    assert len(mail.outbox) == 1


# --- Secrets at rest -----------------------------------------------------------------------------


def _row_text(table: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [pk])
        return " ".join(str(value) for value in cursor.fetchone())


def test_the_totp_seed_is_stored_encrypted(user):
    device = Authenticator.objects.get(user=user)
    seed = device.key_hex
    row = _row_text(Authenticator._meta.db_table, device.pk)
    assert seed not in row and seed.upper() not in row
    assert secrets.decrypt(device.encrypted_key) == seed


def test_recovery_codes_are_stored_hashed(user):
    code = recovery_codes(user)[0]
    stored = RecoveryCode.objects.filter(code_set__user=user).first()
    row = _row_text(RecoveryCode._meta.db_table, stored.pk)
    assert code not in row and code.replace("-", "") not in row
    assert RecoveryCode.objects.filter(code_hash=recovery_code_hash(code)).exists()


def test_the_setup_secret_is_kept_encrypted_in_the_session_and_only_for_a_while(settings):
    client = _client()
    client.post("/signup", {"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"})
    signup_requests_answer_pending()
    path = urlsplit(re.search(r"http://\S+/verify/\S+", mail.outbox[-1].body).group(0)).path
    with clock.travel(clock.now(), tick=True) as traveller:
        html = client.get(path).content.decode()
        b32 = re.search(r'id="totp-secret"[^>]*><strong>([A-Z2-7 ]+)</strong>', html).group(1)
        session_text = str(dict(client.session.items()))
        assert b32.replace(" ", "") not in session_text
        traveller.advance(seconds=settings.TOTP_SETUP_MAX_AGE + 1)
        again = client.get(path).content.decode()
        assert b32 not in again  # expired: a new secret to scan
        assert len([k for k in client.session.keys() if k.startswith("totp_setup:")]) == 1


def test_recovery_codes_waiting_to_be_shown_are_not_in_the_session_in_clear(user):
    client = _client()
    _login_as(client, user.email)
    client.post("/login/code", {"code": totp_code(user)})
    client.post("/account", {"action": "regenerate"})
    stashed = str(dict(client.session.items()))
    html = client.get("/account").content.decode()
    shown = re.findall(r"<li>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</li>", html)
    assert len(shown) == 10 and not any(code in stashed for code in shown)


# --- Key rotation --------------------------------------------------------------------------------


def test_generate_encryption_key_prints_a_fernet_key():
    out = StringIO()
    call_command("generate_encryption_key", stdout=out)
    Fernet(out.getvalue().strip())  # raises for anything else


def test_rotating_encryption_keys_reencrypts_seeds_and_webhook_secrets(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old]
    user = UserFactory()
    project = ProjectFactory()
    WebhookSecret.objects.create(
        project=project, secret=secrets.encrypt("whsec_new"), previous_secret=secrets.encrypt("whsec_old")
    )
    settings.ENCRYPTION_KEYS = [new, old]
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "accounts.Authenticator: 1 re-encrypted" in out.getvalue()
    assert "workflows.WebhookSecret: 1 re-encrypted" in out.getvalue()

    settings.ENCRYPTION_KEYS = [new]  # the old key dropped
    row = WebhookSecret.objects.get(project=project)
    assert (secrets.decrypt(row.secret), secrets.decrypt(row.previous_secret)) == ("whsec_new", "whsec_old")
    client = _client()
    _login_as(client, user.email)
    assert client.post("/login/code", {"code": totp_code(user)})["Location"] == "/"


def test_without_rotation_dropping_the_old_key_makes_seeds_unreadable(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old]
    user = UserFactory()
    settings.ENCRYPTION_KEYS = [new]
    device = Authenticator.objects.get(user=user)
    with pytest.raises(secrets.DecryptionError):
        secrets.decrypt(device.encrypted_key)


def test_rotation_with_a_key_missing_changes_nothing(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old]
    readable = UserFactory()
    settings.ENCRYPTION_KEYS = [new]
    unreadable = UserFactory()  # under `new` only
    settings.ENCRYPTION_KEYS = [old]  # `new` forgotten: one row cannot be opened
    before = dict(Authenticator.objects.values_list("user_id", "encrypted_key"))
    with pytest.raises(CommandError, match=f"accounts.Authenticator {unreadable.authenticator_set.get().pk}"):
        call_command("rotate_encryption_keys", stdout=StringIO())
    assert dict(Authenticator.objects.values_list("user_id", "encrypted_key")) == before
    assert readable.pk in before


def test_a_bad_encryption_key_is_refused_naming_the_setting(settings):
    settings.ENCRYPTION_KEYS = ["not-a-key"]
    with pytest.raises(Exception, match="ENCRYPTION_KEYS"):
        secrets.encrypt("x")


# --- SECRET_KEY rotation -------------------------------------------------------------------------

OLD_SECRET_KEY, NEW_SECRET_KEY = "old-" + "k" * 50, "new-" + "k" * 50


def _verification_path() -> str:
    return urlsplit(re.search(r"http://\S+/verify/\S+", mail.outbox[-1].body).group(0)).path


def test_a_verification_link_signed_with_the_old_secret_key_works_with_it_in_the_fallbacks(settings):
    settings.SECRET_KEY = OLD_SECRET_KEY
    _client().post("/signup", {"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"})
    signup_requests_answer_pending()
    path = _verification_path()
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_SECRET_KEY, [OLD_SECRET_KEY]
    assert _client().get(path).status_code == 200
    settings.SECRET_KEY_FALLBACKS = []
    assert _client().get(path).status_code == 400


def test_an_unsubscribe_link_signed_with_the_old_secret_key_works_with_it_in_the_fallbacks(settings):
    from emails import tracking
    from emails.services import deliver

    from .emails.conftest import identify, make_template

    settings.SECRET_KEY = OLD_SECRET_KEY
    project = ProjectFactory()
    template = make_template(project, publish=True, from_email="shop@localhost")  # DEFAULT_FROM_EMAIL's domain
    delivery = deliver(
        version=template.published_version, customer=identify(project, "ada", {"email": "ada@example.com"})
    )
    path = urlsplit(tracking.unsubscribe_url(delivery.pk)).path
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_SECRET_KEY, [OLD_SECRET_KEY]
    assert _client().get(path).status_code == 200
    settings.SECRET_KEY_FALLBACKS = []
    assert _client().get(path).status_code == 404


def test_rotating_the_secret_key_keeps_derived_seeds_readable_until_rotate_encryption_keys(settings):
    settings.ENCRYPTION_KEYS, settings.SECRET_KEY = [], OLD_SECRET_KEY
    user = UserFactory()
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_SECRET_KEY, [OLD_SECRET_KEY]
    client = _client()
    _login_as(client, user.email)
    assert client.post("/login/code", {"code": totp_code(user)})["Location"] == "/"
    call_command("rotate_encryption_keys", stdout=StringIO())
    settings.SECRET_KEY_FALLBACKS = []
    assert len(Authenticator.objects.get(user=user).key_hex) == 40


# --- Rate limits per client address --------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "path", "data"),
    [
        ("RATE_LIMIT_LOGIN", "/login", {"email": "someone@example.com"}),
        ("RATE_LIMIT_SIGNUP", "/signup", {"email": "someone@example.com", "first_name": "A", "last_name": "B"}),
        ("RATE_LIMIT_RESEND", "/signup/resend", {"email": "someone@example.com"}),
    ],
)
def test_a_form_answers_429_with_retry_after_past_its_rate_limit(mid_window, settings, setting, path, data):
    setattr(settings, setting, (3, 60))
    client = _client(STRANGER)
    for _ in range(3):
        assert client.post(path, data).status_code in (200, 302)
    limited = client.post(path, data)
    assert limited.status_code == 429 and limited["Retry-After"] == "45"
    html = limited.content.decode()
    assert "Too many attempts" in html and "Try again in 45 seconds" in html and "09:01:00" in html
    assert 'class="narrow"' in html  # the platform's layout
    assert _client(OWNER).post(path, data).status_code in (200, 302)  # another address is not limited
    mid_window.advance(seconds=45)
    assert client.post(path, data).status_code in (200, 302)


def test_code_entry_is_rate_limited_per_address(mid_window, settings, user):
    settings.RATE_LIMIT_LOGIN_CODE = (3, 60)
    client = _client(STRANGER)
    _login_as(client, user.email)
    for _ in range(3):
        client.post("/login/code", {"code": "abc"})
    limited = client.post("/login/code", {"code": totp_code(user)})
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert "Too many attempts" in limited.content.decode()


def test_the_setup_code_is_rate_limited_per_address(mid_window, settings):
    settings.RATE_LIMIT_LOGIN_CODE = (2, 60)
    client = _client(STRANGER)
    client.post("/signup", {"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"})
    signup_requests_answer_pending()
    path = _verification_path()
    client.get(path)
    for _ in range(2):
        client.post(path, {"code": "000000"})
    assert client.post(path, {"code": "000000"}).status_code == 429


def test_behind_a_proxy_clients_are_told_apart_by_the_address_the_proxy_appended(mid_window, settings):
    settings.RATE_LIMIT_LOGIN = (1, 60)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.BEHIND_PROXY = True
    proxy = "10.0.0.2"
    first = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7", HTTP_X_FORWARDED_PROTO="https")
    second = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.8", HTTP_X_FORWARDED_PROTO="https")
    assert first.post("/login", {"email": "a@example.com"}, secure=True).status_code == 302
    assert second.post("/login", {"email": "a@example.com"}, secure=True).status_code == 302
    spoofed = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="9.9.9.9, 203.0.113.7", HTTP_X_FORWARDED_PROTO="https")
    assert spoofed.post("/login", {"email": "a@example.com"}, secure=True).status_code == 429


def test_ipv6_clients_of_one_64_block_share_a_limit(mid_window, settings):
    settings.RATE_LIMIT_LOGIN = (1, 60)
    assert _client("2001:db8:1:2::1").post("/login", {"email": "a@example.com"}).status_code == 302
    assert _client("2001:db8:1:2::ffff").post("/login", {"email": "a@example.com"}).status_code == 429
    assert _client("2001:db8:1:3::1").post("/login", {"email": "a@example.com"}).status_code == 302


# --- SIGNUP_MODE=invite --------------------------------------------------------------------------


def _signup(email: str):
    response = _client().post("/signup", {"email": email, "first_name": "Ann", "last_name": "Lee"})
    signup_requests_answer_pending()  # what the worker does after the request's commit
    return response


def test_invite_mode_lets_the_first_user_of_an_empty_instance_sign_up(settings):
    settings.SIGNUP_MODE = "invite"
    assert _signup("founder@example.com")["Location"] == "/signup/sent"
    assert User.objects.filter(email="founder@example.com").exists()
    assert "/verify/" in mail.outbox[-1].body


def test_invite_mode_answers_an_uninvited_address_the_same_and_creates_nothing(settings):
    settings.SIGNUP_MODE = "invite"
    UserFactory()
    response = _signup("stranger@example.com")
    assert response.status_code == 302 and response["Location"] == "/signup/sent"
    assert not User.objects.filter(email="stranger@example.com").exists()
    assert mail.outbox == []


def test_invite_mode_lets_an_invited_address_sign_up(settings):
    settings.SIGNUP_MODE = "invite"
    owner = MembershipFactory(role=Role.OWNER)
    Invitation.objects.create(
        organization=owner.organization, email="invited@example.com", token_hash="h1", invited_by=owner.user
    )
    _signup("Invited@Example.com")
    assert User.objects.filter(email="invited@example.com").exists()
    assert mail.outbox[-1].to == ["invited@example.com"] and "/verify/" in mail.outbox[-1].body


@pytest.mark.parametrize("state", ["accepted", "expired"])
def test_invite_mode_refuses_an_invitation_no_longer_pending(settings, state):
    settings.SIGNUP_MODE = "invite"
    owner = MembershipFactory(role=Role.OWNER)
    invitation = Invitation.objects.create(
        organization=owner.organization, email="late@example.com", token_hash="h2", invited_by=owner.user
    )
    if state == "accepted":
        invitation.accepted_at = clock.now()
    else:
        invitation.created_at = clock.now() - timedelta(seconds=settings.INVITATION_MAX_AGE + 1)
    invitation.save()
    _signup("late@example.com")
    assert not User.objects.filter(email="late@example.com").exists()


def test_open_mode_is_the_default_and_anyone_can_sign_up(settings):
    UserFactory()
    assert settings.SIGNUP_MODE == "open"
    _signup("anyone@example.com")
    assert User.objects.filter(email="anyone@example.com").exists()


# --- Moving django-otp's devices -----------------------------------------------------------------

LEGACY_TABLES = [
    "CREATE TABLE otp_totp_totpdevice (id integer PRIMARY KEY, user_id bigint, name varchar(64), confirmed boolean,"
    " key varchar(80), step smallint, t0 bigint, digits smallint, tolerance smallint, drift smallint, last_t bigint)",
    "CREATE TABLE otp_static_staticdevice (id integer PRIMARY KEY, user_id bigint, name varchar(64),"
    " confirmed boolean)",
    "CREATE TABLE otp_static_statictoken (id integer PRIMARY KEY, device_id integer, token varchar(16))",
]


def test_the_migration_moves_django_otp_devices_encrypting_seeds_and_hashing_codes():
    from django.apps import apps

    migration = importlib.import_module("accounts.migrations.0002_authenticators")
    user = User.objects.create_user(email="legacy@example.com", is_active=True)
    seed = "3132333435363738393031323334353637383930"
    with connection.cursor() as cursor:
        for statement in LEGACY_TABLES:
            cursor.execute(statement)
        cursor.execute(
            "INSERT INTO otp_totp_totpdevice VALUES (1, %s, 'Phone', %s, %s, 30, 0, 6, 1, 0, 5)", [user.pk, True, seed]
        )
        cursor.execute("INSERT INTO otp_static_staticdevice VALUES (1, %s, 'Backup', %s)", [user.pk, True])
        cursor.execute("INSERT INTO otp_static_statictoken VALUES (1, 1, 'ab12c-3de45')")
    migration.move_devices(apps, SimpleNamespace(connection=connection))  # all it uses of a schema editor

    device = Authenticator.objects.get(user=user)
    assert device.key_hex == seed and seed not in device.encrypted_key and device.last_t == 5
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM otp_totp_totpdevice")
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM otp_static_statictoken")
        assert cursor.fetchone()[0] == 0
    client = _client()
    _login_as(client, user.email)
    assert client.post("/login/code", {"code": totp_code(user)})["Location"] == "/"
    again = _client()
    _login_as(again, user.email)
    assert again.post("/login/code", {"code": "ab12c-3de45"})["Location"] == "/"
