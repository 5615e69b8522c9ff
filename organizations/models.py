from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse

from timonier import clock

SLUG_RE = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
slug_validator = RegexValidator(
    SLUG_RE,
    "Use lowercase letters, numbers and hyphens, starting and ending with a letter or number (for example acme-corp).",
)


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


ROLE_RANK = {Role.MEMBER: 0, Role.ADMIN: 1, Role.OWNER: 2}


class Organization(models.Model):
    name = models.CharField("Organization Name", max_length=100)
    slug = models.CharField("Slug", max_length=50, unique=True, validators=[slug_validator])
    created_at = models.DateTimeField(default=clock.now)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="organizations")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"

    def has_role(self, minimum: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(minimum)]


class Project(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField("Project Name", max_length=100)
    slug = models.CharField("Slug", max_length=50, validators=[slug_validator])
    created_at = models.DateTimeField(default=clock.now)
    # Requests per second each API key of the project may send; null: settings.API_RATE_LIMIT.
    ingest_rate_limit = models.PositiveIntegerField("API rate limit", null=True, blank=True)
    # An IANA zone name: workflow delays "until 9:00" use it for customers without a `timezone` trait.
    timezone = models.CharField("Time zone", max_length=64, default="UTC")
    # Domains the project may send email from (a template's From address must be on one of them,
    # or on DEFAULT_FROM_EMAIL's domain), lower-cased.
    sending_domains = models.JSONField("Sending domains", default=list, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["organization", "slug"], name="project_slug_unique_in_org")]

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.slug}"

    def get_absolute_url(self) -> str:
        return reverse("organizations:dashboard", args=[self.organization.slug, self.slug])


class Invitation(models.Model):
    """An invitation to join an organization; the emailed link carries a token whose hash is kept."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=clock.now)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.organization}"


class ApiKey(models.Model):
    """A project's API key. Only a SHA-256 of the key is stored; `prefix` identifies it in lists.

    A fast hash is right here: keys are 238 random bits, so there is nothing to brute-force, and
    the hash is computed on every API request.
    """

    class Scope(models.TextChoices):
        # Public (analytics.js puts it in page source): it can only send calls.
        WRITE = "write", "Write key"
        # Private: also reads customers and events, erases, and manages segments and workflows.
        SECRET = "secret", "Secret key"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField("Key Name", max_length=100)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.SECRET)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=clock.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
