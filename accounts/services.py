"""Writes of the accounts domain: signup, verification links, authenticator setup, login codes."""

import base64
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from timonier import clock

from .models import EmailVerification, User

logger = logging.getLogger(__name__)

VERIFICATION_SALT = "accounts.email-verification"
RESEND_COOLDOWN = timedelta(seconds=60)


class VerificationError(Exception):
    """A verification link that cannot be used; `reason` is one of invalid, expired, used."""

    def __init__(self, reason: str, user: User | None = None):
        super().__init__(reason)
        self.reason = reason
        self.user = user


def user_signup(*, email: str, first_name: str, last_name: str) -> User:
    email = User.objects.normalize_email(email).lower()
    if User.objects.filter(email__iexact=email).exists():
        raise ValidationError({"email": "An account with this email already exists."})
    try:
        with transaction.atomic():
            user = User.objects.create_user(email=email, first_name=first_name, last_name=last_name)
    except IntegrityError as exc:  # a concurrent signup with the same email won the race
        raise ValidationError({"email": "An account with this email already exists."}) from exc
    verification_send(user=user)
    return user


def verification_token(verification: EmailVerification) -> str:
    return signing.dumps(str(verification.id), salt=VERIFICATION_SALT)


def verification_send(*, user: User) -> EmailVerification:
    """Create a verification link for a user whose authenticator is not set up, and email it."""
    latest = user.email_verifications.order_by("-created_at").first()
    if latest and latest.used_at is None and clock.now() - latest.created_at < RESEND_COOLDOWN:
        raise ValidationError({"email": "A verification email was sent less than a minute ago; check your inbox."})
    verification = EmailVerification.objects.create(user=user)
    link = settings.PLATFORM_URL + reverse("accounts:verify", args=[verification_token(verification)])
    context = {"user": user, "link": link, "hours": settings.EMAIL_VERIFICATION_MAX_AGE // 3600}
    message = EmailMultiAlternatives(
        subject="Verify your email for Timonier",
        body=render_to_string("accounts/emails/verification.txt", context),
        to=[user.email],
    )
    message.attach_alternative(render_to_string("accounts/emails/verification.html", context), "text/html")
    message.send()
    logger.info("verification email sent user=%s verification=%s", user.pk, verification.pk)
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
    """A new 160-bit TOTP key, hex-encoded as django-otp stores it."""
    return secrets.token_hex(20)


def b32_secret(secret_hex: str) -> str:
    """The secret as the base32 text people type into an authenticator, in groups of four."""
    b32 = base64.b32encode(bytes.fromhex(secret_hex)).decode().rstrip("=")
    return " ".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def totp_config_url(*, user: User, secret_hex: str) -> str:
    return TOTPDevice(user=user, key=secret_hex, name="Authenticator").config_url


def _totp_match(secret_hex: str, code: str) -> int | None:
    """The time step a code matches within the drift tolerance, or None."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = TOTP(bytes.fromhex(secret_hex), step=30, t0=0, digits=6, drift=0)
    if totp.verify(int(code), tolerance=settings.OTP_TOTP_TOLERANCE):
        return totp.t()  # includes the drift the match needed
    return None


def recovery_code_generate() -> str:
    raw = secrets.token_hex(5)
    return f"{raw[:5]}-{raw[5:]}"


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
        TOTPDevice.objects.create(
            user_id=verification.user_id,
            name="Authenticator",
            key=secret_hex,
            confirmed=True,
            tolerance=settings.OTP_TOTP_TOLERANCE,
            last_t=matched_step,  # the setup code cannot be replayed to log in
        )
        codes = [recovery_code_generate() for _ in range(settings.RECOVERY_CODE_COUNT)]
        static = StaticDevice.objects.create(user_id=verification.user_id, name="Recovery codes", confirmed=True)
        StaticToken.objects.bulk_create(StaticToken(device=static, token=c) for c in codes)
    logger.info("authenticator confirmed user=%s", verification.user_id)
    return codes


@dataclass
class LoginResult:
    device: TOTPDevice | StaticDevice | None
    locked_seconds: int = 0


def login_code_verify(*, user: User, code: str) -> LoginResult:
    """Check a 6-digit TOTP code or a recovery code for a user.

    The device row is locked for the check, so two simultaneous submissions of one code
    cannot both pass (django-otp records the accepted time step in `last_t`).
    """
    code = code.strip().replace(" ", "")
    if not code:
        return LoginResult(device=None)
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
        if device is None:
            return LoginResult(device=None)
        allowed, info = device.verify_is_allowed()
        if not allowed:
            locked_until = (info or {}).get("locked_until")
            seconds = max(1, int((locked_until - clock.now()).total_seconds()) + 1) if locked_until else 1
            return LoginResult(device=None, locked_seconds=seconds)
        if code.isdigit() and len(code) == 6:
            return LoginResult(device=device if device.verify_token(code) else None)
        static = StaticDevice.objects.filter(user=user, confirmed=True).first()
        if static is not None:
            deleted, _ = StaticToken.objects.filter(device=static, token=code.lower()).delete()
            if deleted:
                logger.info("recovery code used user=%s", user.pk)
                return LoginResult(device=static)
        device.throttle_increment(commit=True)
        return LoginResult(device=None)


def recovery_codes_remaining(*, user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def recovery_codes_regenerate(*, user: User) -> list[str]:
    codes = [recovery_code_generate() for _ in range(settings.RECOVERY_CODE_COUNT)]
    with transaction.atomic():
        static, _ = StaticDevice.objects.get_or_create(
            user=user, defaults={"name": "Recovery codes", "confirmed": True}
        )
        static.token_set.all().delete()
        StaticToken.objects.bulk_create(StaticToken(device=static, token=c) for c in codes)
    return codes


def verifications_purge_expired() -> int:
    cutoff = clock.now() - timedelta(seconds=settings.EMAIL_VERIFICATION_MAX_AGE)
    deleted, _ = EmailVerification.objects.filter(created_at__lt=cutoff).delete()
    return deleted
