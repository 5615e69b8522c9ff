"""Writes of the accounts domain: signup, verification links, authenticator setup, login codes.

Signup and resend forms are answered by a worker (`signup_request_answer`), not in their request:
see `models.SignupRequest`."""

import base64
import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, connection, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django_otp.oath import TOTP

from timonier import clock

from . import models, selectors, throttling
from .models import Authenticator, EmailVerification, RecoveryCode, RecoveryCodeSet, SignupRequest, User

logger = logging.getLogger(__name__)

VERIFICATION_SALT = "accounts.email-verification"
RESEND_COOLDOWN = timedelta(seconds=60)


class VerificationError(Exception):
    """A verification link that cannot be used; `reason` is one of invalid, expired, used."""

    def __init__(self, reason: str, user: User | None = None):
        super().__init__(reason)
        self.reason = reason
        self.user = user


def signup_request(*, email: str, first_name: str, last_name: str) -> None:
    """Take a signup form, answering the same whatever the address (no account enumeration).

    Only stores the form for the worker (`signup_request_answer`): the response does the same
    work whether the address has an account, may sign up or is refused, so neither its content
    nor its time tells which; nothing here talks to SMTP."""
    _request_store(kind=SignupRequest.Kind.SIGNUP, email=email, first_name=first_name, last_name=last_name)


def verification_resend_request(*, email: str) -> None:
    """A new verification link for an account whose setup is pending; the same answer for any address
    (stored for the worker, like `signup_request`)."""
    _request_store(kind=SignupRequest.Kind.RESEND, email=email)


def _request_store(**fields) -> None:
    from .tasks import signup_request_answer_task

    with transaction.atomic():
        request = SignupRequest.objects.create(**fields)
        # The row is the durable part (a lost wake-up is swept); the broker only rings.
        transaction.on_commit(lambda: signup_request_answer_task.delay(request.pk))


def signup_request_answer(*, request_id: int) -> bool:
    """The worker's answer to a stored form: the account and verification link it makes, and the
    emails it sends. Once: the row is locked, and deleted in the transaction that makes the rows;
    the emails go after that commit (a worker dying in between loses them, never sends them twice:
    the visitor can ask for a new link). False when the request is answered or being answered."""
    outgoing: list[EmailMultiAlternatives] = []
    with transaction.atomic():
        query = SignupRequest.objects.filter(pk=request_id)
        if connection.features.has_select_for_update_skip_locked:
            query = query.select_for_update(skip_locked=True)
        request = query.first()
        if request is None:
            return False
        if request.kind == SignupRequest.Kind.SIGNUP:
            _signup_answer(request, outgoing)
        else:
            _resend_answer(request, outgoing)
        request.delete()
    for message in outgoing:
        try:
            message.send()
        except Exception:  # one failed send must not keep the others
            logger.exception("accounts email to user failed: %s", message.subject)
    return True


def signup_requests_answer_pending(*, older_than: timedelta = timedelta(0), limit: int = 500) -> int:
    """Answer the stored forms older than `older_than`, oldest first (the sweep: a lost wake-up)."""
    ids = list(
        SignupRequest.objects.filter(created_at__lte=clock.now() - older_than)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(signup_request_answer(request_id=pk) for pk in ids)


def _signup_answer(request: SignupRequest, outgoing: list) -> User | None:
    """A new address gets an account and a verification link, if SIGNUP_MODE lets it sign up; an
    address with an account gets an email saying so (or, if its setup never finished, a new
    verification link)."""
    email = User.objects.normalize_email(request.email).lower()
    existing = User.objects.filter(email__iexact=email).first()
    if existing is not None:
        _existing_account_answer(user=existing, outgoing=outgoing)
        return None
    if not selectors.signup_open_to(email=email):
        logger.info("signup refused: not invited (SIGNUP_MODE=%s)", settings.SIGNUP_MODE)
        return None
    try:
        with transaction.atomic():
            user = User.objects.create_user(email=email, first_name=request.first_name, last_name=request.last_name)
    except IntegrityError:  # a concurrent signup with the same email won the race
        return None
    _verification_message(user=user, outgoing=outgoing)
    return user


def _resend_answer(request: SignupRequest, outgoing: list) -> None:
    user = User.objects.filter(email__iexact=request.email).first()
    if user is not None:
        _existing_account_answer(user=user, outgoing=outgoing)


def _existing_account_answer(*, user: User, outgoing: list) -> None:
    if user.is_active:
        _account_exists_message(user=user, outgoing=outgoing)
    else:
        _verification_message(user=user, outgoing=outgoing)


def _account_exists_message(*, user: User, outgoing: list) -> bool:
    """Tell an account's owner that someone tried to sign up with their address; at most once a minute."""
    digest = hashlib.sha256(user.email.lower().encode()).hexdigest()[:32]
    if not cache.add(f"accounts:exists-notice:{digest}", 1, timeout=int(RESEND_COOLDOWN.total_seconds())):
        return False
    context = {"user": user, "login_link": settings.PLATFORM_URL + reverse("accounts:login")}
    message = EmailMultiAlternatives(
        subject="You already have a Timonier account",
        body=render_to_string("accounts/emails/account_exists.txt", context),
        to=[user.email],
    )
    message.attach_alternative(render_to_string("accounts/emails/account_exists.html", context), "text/html")
    outgoing.append(message)
    logger.info("account-exists email queued user=%s", user.pk)
    return True


def verification_token(verification: EmailVerification) -> str:
    return signing.dumps(str(verification.id), salt=VERIFICATION_SALT)


def _verification_message(*, user: User, outgoing: list) -> EmailVerification | None:
    """Create a verification link for a user whose authenticator is not set up, and its email.

    At most one a minute per account (None otherwise): the form says the same either way.
    """
    latest = user.email_verifications.order_by("-created_at").first()
    if latest and latest.used_at is None and clock.now() - latest.created_at < RESEND_COOLDOWN:
        return None
    verification = EmailVerification.objects.create(user=user)
    link = settings.PLATFORM_URL + reverse("accounts:verify", args=[verification_token(verification)])
    context = {"user": user, "link": link, "hours": settings.EMAIL_VERIFICATION_MAX_AGE // 3600}
    message = EmailMultiAlternatives(
        subject="Verify your email for Timonier",
        body=render_to_string("accounts/emails/verification.txt", context),
        to=[user.email],
    )
    message.attach_alternative(render_to_string("accounts/emails/verification.html", context), "text/html")
    outgoing.append(message)
    logger.info("verification email queued user=%s verification=%s", user.pk, verification.pk)
    return verification


def verification_check(*, token: str) -> EmailVerification:
    """Return the pending verification a link points to, or raise VerificationError."""
    try:
        verification_id = signing.loads(token, salt=VERIFICATION_SALT, max_age=settings.EMAIL_VERIFICATION_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise VerificationError("expired") from exc
    except signing.BadSignature as exc:
        raise VerificationError("invalid") from exc
    verification = EmailVerification.objects.select_related("user").filter(pk=verification_id).first()
    if verification is None:
        raise VerificationError("invalid")
    if verification.used_at is not None or verification.user.is_active:
        raise VerificationError("used", user=verification.user)
    return verification


def totp_secret_generate() -> str:
    """A new 160-bit TOTP key, hex-encoded."""
    return secrets.token_hex(20)


def b32_secret(secret_hex: str) -> str:
    """The secret as the base32 text people type into an authenticator, in groups of four."""
    b32 = base64.b32encode(bytes.fromhex(secret_hex)).decode().rstrip("=")
    return " ".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def totp_config_url(*, user: User, secret_hex: str) -> str:
    return models.totp_config_url(label=user.get_username(), secret_hex=secret_hex)


def _totp_match(secret_hex: str, code: str) -> int | None:
    """The time step a code matches within the drift tolerance, or None."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = TOTP(bytes.fromhex(secret_hex), step=30, t0=0, digits=6, drift=0)
    totp.time = clock.now().timestamp()
    if totp.verify(int(code), tolerance=settings.OTP_TOTP_TOLERANCE):
        return totp.t()  # includes the drift the match needed
    return None


def recovery_code_generate() -> str:
    """80 random bits as four groups of four base32 letters: typed by hand, and too many to brute-force."""
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def _recovery_codes_store(*, user_id: int, codes: list[str]) -> None:
    code_set, _ = RecoveryCodeSet.objects.get_or_create(
        user_id=user_id, defaults={"name": "Recovery codes", "confirmed": True}
    )
    code_set.codes.all().delete()
    RecoveryCode.objects.bulk_create(
        RecoveryCode(code_set=code_set, code_hash=models.recovery_code_hash(code)) for code in codes
    )


def totp_setup_confirm(*, verification: EmailVerification, secret_hex: str, code: str) -> list[str] | None:
    """Confirm the authenticator with its first code, activate the user, return recovery codes.

    Returns None for a wrong code. Raises VerificationError("used") if the link or the account
    was completed meanwhile: of two simultaneous submissions, the conditional updates below let
    exactly one through.
    """
    matched_step = _totp_match(secret_hex, code)
    if matched_step is None:
        return None
    now = clock.now()
    with transaction.atomic():
        activated = User.objects.filter(pk=verification.user_id, is_active=False).update(
            is_active=True, email_verified_at=now
        )
        consumed = EmailVerification.objects.filter(pk=verification.pk, used_at__isnull=True).update(used_at=now)
        if not (activated and consumed):
            transaction.set_rollback(True)
            raise VerificationError("used", user=verification.user)
        authenticator = Authenticator(
            user_id=verification.user_id,
            name="Authenticator",
            confirmed=True,
            tolerance=settings.OTP_TOTP_TOLERANCE,
            last_t=matched_step,  # the setup code cannot be replayed to log in
        )
        authenticator.key_hex = secret_hex
        authenticator.save()
        codes = [recovery_code_generate() for _ in range(settings.RECOVERY_CODE_COUNT)]
        _recovery_codes_store(user_id=verification.user_id, codes=codes)
    logger.info("authenticator confirmed user=%s", verification.user_id)
    return codes


@dataclass
class LoginResult:
    user: User | None = None
    device: Authenticator | RecoveryCodeSet | None = None
    locked_seconds: int = 0
    # The account's own ceiling (wrong codes from many clients): its TOTP codes wait, recovery codes do not.
    locked_for_everyone: bool = False


def login_code_verify(*, email: str, code: str, address: str) -> LoginResult:
    """Check a 6-digit TOTP code or a recovery code typed for `email` from client `address`.

    An unknown or unfinished account answers exactly like a wrong code, so the login form
    tells nobody which addresses have accounts. Wrong codes count per account and client
    (`accounts.throttling`) and, for TOTP codes, on the device from all clients together; a
    valid recovery code passes both, since its 80 bits need no throttle.
    The device row is locked for the check, so two simultaneous submissions of one code
    cannot both pass (`last_t` records the accepted time step).
    """
    code = code.strip().replace(" ", "")
    user = User.objects.filter(email__iexact=email, is_active=True).first()
    is_totp = code.isdigit() and len(code) == 6
    if not is_totp and code and user is not None:
        code_set = RecoveryCodeSet.objects.filter(user=user, confirmed=True).first()
        if code_set is not None and code_set.verify_token(code):
            logger.info("recovery code used user=%s", user.pk)
            throttling.code_failures_clear(email=email, address=address)
            return LoginResult(user=user, device=code_set)
    locked = throttling.code_failures_lock(email=email, address=address)
    if locked:
        return LoginResult(locked_seconds=locked)
    if is_totp and user is not None:
        with transaction.atomic():
            device = Authenticator.objects.select_for_update().filter(user=user, confirmed=True).first()
            if device is not None:
                allowed, info = device.verify_is_allowed()
                if not allowed:
                    return LoginResult(locked_seconds=info["retry_after"], locked_for_everyone=True)
                if device.verify_token(code):
                    throttling.code_failures_clear(email=email, address=address)
                    return LoginResult(user=user, device=device)
    throttling.code_failure_record(email=email, address=address)
    return LoginResult()


def recovery_codes_remaining(*, user: User) -> int:
    return RecoveryCode.objects.filter(code_set__user=user, code_set__confirmed=True).count()


def recovery_codes_regenerate(*, user: User) -> list[str]:
    codes = [recovery_code_generate() for _ in range(settings.RECOVERY_CODE_COUNT)]
    with transaction.atomic():
        _recovery_codes_store(user_id=user.pk, codes=codes)
    return codes


def verifications_purge_expired() -> int:
    cutoff = clock.now() - timedelta(seconds=settings.EMAIL_VERIFICATION_MAX_AGE)
    deleted, _ = EmailVerification.objects.filter(created_at__lt=cutoff).delete()
    return deleted
