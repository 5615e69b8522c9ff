import uuid

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower

from timonier import clock


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
