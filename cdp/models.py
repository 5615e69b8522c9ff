"""Customers, their identities and events, and the inbox of accepted commands.

The API never writes customers or events: it stores each accepted request as a `Command` row
(durable once committed) and answers. Workers drain the inbox in batches, each partition of a
project on its own (see `cdp/processing.py`).
"""

import uuid

from django.db import models
from django.db.models import Q

from organizations.models import Project
from timonier import clock


class Command(models.Model):
    """An accepted API request waiting to be processed: one row per request and partition.

    `payload` holds the validated, normalised messages as JSON text (a list). A request whose
    calls fall in several partitions of the project (`cdp.inbox.partition_of`) is stored as one
    row per partition, all with the request's `command_id`, each keeping its calls' order. Rows are
    deleted in the same transaction that applies them, so a command is applied exactly once even
    though the worker that claims it may die half-way (its transaction then rolls back).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    partition = models.PositiveSmallIntegerField(default=0)
    command_id = models.UUIDField(default=uuid.uuid4)
    received_at = models.DateTimeField(default=clock.now)
    message_count = models.PositiveIntegerField(default=1)
    payload = models.TextField()
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "command_id", "partition"], name="cdp_command_piece_unique")
        ]
        indexes = [models.Index(fields=["project", "partition", "id"], name="cdp_command_partition_id")]

    def __str__(self) -> str:
        return f"command {self.command_id} ({self.message_count} messages)"


class FailedCommand(models.Model):
    """A command the processor could not apply after several attempts, set aside with its error.

    Kept whole, so nothing accepted is lost: once the cause is fixed it can be put back in the
    inbox, in its partition (`manage.py replay_failed_commands`). Database outages never land
    here: only errors that would recur on every attempt (bad data), so one bad command cannot
    block a partition.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    partition = models.PositiveSmallIntegerField(default=0)
    command_id = models.UUIDField()
    received_at = models.DateTimeField()
    message_count = models.PositiveIntegerField()
    payload = models.TextField()
    error = models.TextField()
    failed_at = models.DateTimeField(default=clock.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "command_id", "partition"], name="cdp_failedcommand_piece_unique"
            )
        ]

    def __str__(self) -> str:
        return f"failed command {self.command_id}"


class Customer(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="customers", db_index=False)
    # The customer_id (Segment's userId) the application knows them by; null while anonymous.
    external_id = models.CharField(max_length=255, null=True, blank=True)
    traits = models.JSONField(default=dict)
    # When each trait was last set (epoch milliseconds of the call's timestamp): an identify that
    # arrives late with an older timestamp does not overwrite a newer value.
    trait_times = models.JSONField(default=dict)
    # Copies of the `email` and `name` traits, lower-cased, for search and lists.
    email = models.CharField(max_length=320, blank=True, default="")
    name = models.CharField(max_length=255, blank=True, default="")
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    created_at = models.DateTimeField(default=clock.now)
    updated_at = models.DateTimeField(default=clock.now)

    class Meta:
        # No index on last_seen_at or traits: every batch rewrites those columns, and leaving them
        # unindexed lets PostgreSQL update rows in place (HOT, with the fillfactor of migration 0002).
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"],
                condition=Q(external_id__isnull=False),
                name="cdp_customer_external_id_unique",
            )
        ]
        indexes = [
            models.Index(fields=["project", "-id"], name="cdp_customer_project_recent"),
            models.Index(fields=["project", "email"], name="cdp_customer_project_email"),
        ]

    def __str__(self) -> str:
        return self.external_id or f"anonymous customer {self.pk}"

    @property
    def display_name(self) -> str:
        return str(self.traits.get("name") or self.external_id or self.email or f"Anonymous #{self.pk}")


class Identity(models.Model):
    """An id that resolves to a customer: a customer_id or an anonymous_id.

    A merge moves the secondary's identities to the primary, so a merged id keeps resolving.
    """

    class Kind(models.TextChoices):
        CUSTOMER_ID = "customer_id", "Customer ID"
        ANONYMOUS_ID = "anonymous_id", "Anonymous ID"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    value = models.CharField(max_length=255)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="identities")
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "value"], name="cdp_identity_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


class Event(models.Model):
    """One call on a customer's timeline: track, page, screen, group, identify, alias, merge."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="events", db_index=False)
    type = models.CharField(max_length=16)
    name = models.CharField(max_length=255, blank=True, default="")
    properties = models.JSONField(default=dict)
    context = models.JSONField(default=dict)
    timestamp = models.DateTimeField()
    received_at = models.DateTimeField()
    message_id = models.CharField(max_length=255)

    class Meta:
        constraints = [
            # Deduplication: a repeated message_id within a project is stored once, forever.
            models.UniqueConstraint(fields=["project", "message_id"], name="cdp_event_message_unique"),
        ]
        indexes = [
            models.Index(fields=["project", "customer", "-timestamp"], name="cdp_event_customer_time"),
            models.Index(fields=["project", "name", "-timestamp"], name="cdp_event_name_time"),
            models.Index(fields=["project", "-received_at"], name="cdp_event_received"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.name}".strip()


class Suppression(models.Model):
    """An id erased on request (right to erasure): late calls for it are dropped, not recreated."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    kind = models.CharField(max_length=16, choices=Identity.Kind.choices)
    value = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "kind", "value"], name="cdp_suppression_unique")]

    def __str__(self) -> str:
        return f"suppressed {self.kind}={self.value}"
