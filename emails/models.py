"""Email templates, their published versions, the deliveries sent from them, and who opted out.

A template is a draft the designer edits; publishing freezes it into an `EmailTemplateVersion`
(with its compiled HTML and text), which is what workflows send. A `Delivery` is one email to one
address, with how far it got (sent, opened, clicked, unsubscribed).
"""

from django.conf import settings
from django.db import models

from cdp.models import Customer
from organizations.models import Project
from timonier import clock

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_content")
# The fields a version copies from its template when it is published.
CONTENT_FIELDS = (
    "subject",
    "preheader",
    "from_name",
    "from_email",
    "reply_to",
    "mjml",
    "design",
    *UTM_FIELDS,
    "track_opens",
    "track_clicks",
)


class EmailTemplate(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="email_templates")
    name = models.CharField(max_length=100)
    # RFC 5322 caps a header line at 998 characters.
    subject = models.CharField(max_length=998, blank=True, default="")
    preheader = models.CharField(max_length=255, blank=True, default="")
    from_name = models.CharField(max_length=100, blank=True, default="")
    # Blank: the project default (settings.DEFAULT_FROM_EMAIL).
    from_email = models.EmailField(blank=True, default="")
    reply_to = models.EmailField(blank=True, default="")
    # The GrapesJS project data, exactly as the designer saved it, and the MJML it produced.
    design = models.JSONField(default=dict, blank=True)
    mjml = models.TextField(blank=True, default="")
    utm_source = models.CharField(max_length=100, blank=True, default="")
    utm_medium = models.CharField(max_length=100, blank=True, default="")
    utm_campaign = models.CharField(max_length=100, blank=True, default="")
    utm_content = models.CharField(max_length=100, blank=True, default="")
    track_opens = models.BooleanField(default=True)
    track_clicks = models.BooleanField(default=True)
    published_version = models.ForeignKey(
        "EmailTemplateVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    has_unpublished_changes = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(default=clock.now)
    updated_at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="emails_template_name_unique"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def status(self) -> str:
        if self.published_version_id and not self.has_unpublished_changes:
            return "published"
        return "draft"


class EmailTemplateVersion(models.Model):
    """A published template, frozen: never updated once written (workflows send exactly this)."""

    template = models.ForeignKey(EmailTemplate, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    subject = models.CharField(max_length=998, blank=True, default="")
    preheader = models.CharField(max_length=255, blank=True, default="")
    from_name = models.CharField(max_length=100, blank=True, default="")
    from_email = models.EmailField(blank=True, default="")
    reply_to = models.EmailField(blank=True, default="")
    mjml = models.TextField(blank=True, default="")
    design = models.JSONField(default=dict, blank=True)
    utm_source = models.CharField(max_length=100, blank=True, default="")
    utm_medium = models.CharField(max_length=100, blank=True, default="")
    utm_campaign = models.CharField(max_length=100, blank=True, default="")
    utm_content = models.CharField(max_length=100, blank=True, default="")
    track_opens = models.BooleanField(default=True)
    track_clicks = models.BooleanField(default=True)
    # The MJML compiled once at publishing (Liquid still in it: it is rendered per recipient).
    html = models.TextField(blank=True, default="")
    # The plain-text part derived from `html`.
    text = models.TextField(blank=True, default="")
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    published_at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["template", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="emails_version_number_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.template} v{self.number}"


class Delivery(models.Model):
    class Kind(models.TextChoices):
        TEST = "test", "Test"
        MARKETING = "marketing", "Marketing"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"  # claimed by a worker (see emails.tasks)
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        OPENED = "opened", "Opened"
        CLICKED = "clicked", "Clicked"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="email_deliveries")
    # The template sent; for a test send of a draft there is no version (template_version is null).
    template = models.ForeignKey(EmailTemplate, on_delete=models.CASCADE, related_name="deliveries")
    # RESTRICT, not PROTECT: a version that was sent cannot be deleted on its own, but deleting
    # the whole project (which deletes its deliveries too) is not blocked by it.
    template_version = models.ForeignKey(
        EmailTemplateVersion, on_delete=models.RESTRICT, null=True, blank=True, related_name="deliveries"
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="email_deliveries"
    )
    to_email = models.CharField(max_length=320)
    # The event that triggered the send, for `{{ event.* }}` when the worker renders it.
    event = models.JSONField(null=True, blank=True)
    workflow_step = models.CharField(max_length=100, blank=True, default="")
    # What caused this send (a workflow run's step), unique per project: `deliver` called again with
    # the same key returns this delivery and sends nothing. Blank for test sends.
    idempotency_key = models.CharField(max_length=200, blank=True, default="")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.MARKETING)
    # The furthest state reached: opened after sent, clicked after opened, unsubscribed last.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True, default="")
    message_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=clock.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    open_count = models.PositiveIntegerField(default=0)
    click_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["project", "customer", "-created_at"], name="emails_delivery_customer"),
            models.Index(fields=["template", "-created_at"], name="emails_delivery_template"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="emails_delivery_idempotency_key_unique",
            )
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} to {self.to_email} ({self.status})"


class DeliveryClick(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="clicks")
    url = models.TextField()
    at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"click on {self.url}"


class Unsubscription(models.Model):
    """An address that asked for no more marketing email from this project."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="email_unsubscriptions")
    # Lower-cased.
    email = models.CharField(max_length=320)
    customer = models.ForeignKey(Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    delivery = models.ForeignKey(Delivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    at = models.DateTimeField(default=clock.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "email"], name="emails_unsubscription_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.email} unsubscribed"
