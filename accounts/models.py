import base64
import hashlib
import math
import uuid
from datetime import timedelta
from urllib.parse import quote, urlencode

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower
from django_otp.models import Device, VerifyNotAllowed
from django_otp.oath import TOTP

from timonier import clock, secrets


class UserManager(BaseUserManager):
    def create_user(self, email: str, first_name: str = "", last_name: str = "", **extra) -> "User":
        user = self.model(
            email=self.normalize_email(email).lower(), first_name=first_name, last_name=last_name, **extra
        )
        user.set_unusable_password()
        user.save(using=self._db)
        return user


class User(AbstractBaseUser):
    """A person who signs in to the platform. The authenticator (TOTP) is the credential: no password.

    `is_active` stays False until the first TOTP code confirms the authenticator, so an account
    whose setup never finished cannot sign in.
    """

    email = models.EmailField(max_length=254, unique=True)
    first_name = models.CharField(max_length=150)
    last_name = models.CharField(max_length=150)
    is_active = models.BooleanField(default=False)
    email_verified_at = models.DateTimeField(null=True, blank=True)
    date_joined = models.DateTimeField(default=clock.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["first_name", "last_name"]

    class Meta:
        constraints = [models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique")]

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def get_short_name(self) -> str:
        return self.first_name


class EmailVerification(models.Model):
    """One verification link. The link carries the signed id; `used_at` makes it single-use."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="email_verifications")
    created_at = models.DateTimeField(default=clock.now)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"verification for {self.user_id} at {self.created_at:%Y-%m-%d %H:%M}"


class SignupRequest(models.Model):
    """A signup or resend form as submitted, answered by a worker (`services.signup_request_answer`).

    The form's request only stores this row (committed with it) and wakes the worker, whatever the
    address: whether it has an account, is invited or refused, the response does the same work in
    the same time, and the emails (SMTP) go from the worker. The row is deleted when answered."""

    class Kind(models.TextChoices):
        SIGNUP = "signup"
        RESEND = "resend"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    email = models.EmailField(max_length=254)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} request {self.pk} at {self.created_at:%Y-%m-%d %H:%M}"


class Authenticator(Device):
    """The TOTP authenticator app of a user, the only credential of a passwordless account.

    Its seed is stored encrypted (timonier.secrets, keys from the environment), so a database
    backup alone signs nobody in. It implements django-otp's Device API (`verify_is_allowed`,
    `verify_token`, `persistent_id`), so `django_otp.login` and OTPMiddleware work with it.

    `failure_count` since `failures_since` is the device's global ceiling on wrong codes, from
    every client together; the much shorter per account-and-client ceiling is in
    `accounts.throttling`, so a stranger typing wrong codes cannot lock the owner out.
    """

    encrypted_key = models.TextField()  # timonier.secrets.encrypt(hex seed)
    step = models.PositiveSmallIntegerField(default=30)
    t0 = models.BigIntegerField(default=0)
    digits = models.PositiveSmallIntegerField(default=6)
    tolerance = models.PositiveSmallIntegerField(default=1)
    drift = models.SmallIntegerField(default=0)
    last_t = models.BigIntegerField(default=-1)  # time step of the last accepted code: never accepted again
    failure_count = models.PositiveIntegerField(default=0)
    failures_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=clock.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user"], name="accounts_authenticator_one_per_user")]

    @property
    def key_hex(self) -> str:
        return secrets.decrypt(self.encrypted_key)

    @key_hex.setter
    def key_hex(self, value: str) -> None:
        self.encrypted_key = secrets.encrypt(value)

    @property
    def bin_key(self) -> bytes:
        return bytes.fromhex(self.key_hex)

    @property
    def config_url(self) -> str:
        return totp_config_url(label=self.user.get_username(), secret_hex=self.key_hex)

    def _global_lock_seconds(self) -> int:
        if self.failures_since is None or self.failure_count < settings.AUTHENTICATOR_MAX_FAILURES:
            return 0
        ends = self.failures_since + timedelta(seconds=settings.AUTHENTICATOR_FAILURE_WINDOW)
        return max(0, math.ceil((ends - clock.now()).total_seconds()))

    def verify_is_allowed(self) -> tuple[bool, dict | None]:
        seconds = self._global_lock_seconds()
        if seconds:
            return False, {"reason": VerifyNotAllowed.N_FAILED_ATTEMPTS, "retry_after": seconds}
        return True, None

    def verify_token(self, token) -> bool:
        """Check a code; the caller holds the row (select_for_update) so a code is accepted once."""
        if not self.verify_is_allowed()[0]:
            return False
        token = str(token).strip().replace(" ", "")
        totp = TOTP(self.bin_key, self.step, self.t0, self.digits, self.drift)
        totp.time = clock.now().timestamp()
        if token.isdigit() and len(token) == self.digits and totp.verify(int(token), self.tolerance, self.last_t + 1):
            self.last_t = totp.t()
            self.drift = totp.drift
            self.failure_count, self.failures_since = 0, None
            self.last_used_at = clock.now()
            self.save(update_fields=["last_t", "drift", "failure_count", "failures_since", "last_used_at"])
            return True
        self._count_failure()
        return False

    def _count_failure(self) -> None:
        now = clock.now()
        window = timedelta(seconds=settings.AUTHENTICATOR_FAILURE_WINDOW)
        if self.failures_since is None or now - self.failures_since >= window:
            self.failure_count, self.failures_since = 0, now
        self.failure_count += 1
        self.save(update_fields=["failure_count", "failures_since"])


class RecoveryCodeSet(Device):
    """The recovery codes of a user, as one django-otp Device (what the session records as used)."""

    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user"], name="accounts_recoverycodeset_one_per_user")]

    def verify_token(self, token) -> bool:
        """Consume a code: the DELETE lets exactly one of two simultaneous uses through."""
        deleted, _ = self.codes.filter(code_hash=recovery_code_hash(str(token))).delete()
        return bool(deleted)


class RecoveryCode(models.Model):
    """One unused recovery code, kept as a SHA-256 of its normalised text.

    A fast hash is enough because the codes are 80 random bits (see recovery_code_generate):
    there is nothing to brute-force, unlike a password.
    """

    code_set = models.ForeignKey(RecoveryCodeSet, on_delete=models.CASCADE, related_name="codes")
    code_hash = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["code_set", "code_hash"], name="accounts_recoverycode_unique")]

    def __str__(self) -> str:
        return f"recovery code {self.code_hash[:8]}… of {self.code_set.user_id}"


def recovery_code_normalise(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def recovery_code_hash(code: str) -> str:
    return hashlib.sha256(recovery_code_normalise(code).encode()).hexdigest()


def totp_config_url(*, label: str, secret_hex: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code (Google's Key URI format)."""
    issuer = settings.OTP_TOTP_ISSUER.replace(":", "")
    params = urlencode({"secret": base64.b32encode(bytes.fromhex(secret_hex)).decode(), "algorithm": "SHA1"})
    params += f"&digits=6&period=30&issuer={quote(issuer)}"
    return f"otpauth://totp/{quote(f'{issuer}:{label}')}?{params}"
