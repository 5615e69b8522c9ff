"""Segments: a named condition over a project's customers, who is in it now, and who came and went."""

from django.db import models

from cdp.models import Customer
from organizations.models import Project
from timonier import clock


class Segment(models.Model):
    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        # Its last build raised (`build_error` says why); it is left out of live updates until changed.
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="segments")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    # A condition of `segments.conditions`, validated by the services before it is ever stored.
    condition = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BUILDING)
    # Kept by every membership change, so lists never count members. On PostgreSQL a live update
    # adds to it right after its commit, from its MemberCountDelta rows (see segments.membership).
    member_count = models.PositiveIntegerField(default=0)
    last_computed_at = models.DateTimeField(null=True, blank=True)
    build_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=clock.now)
    updated_at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A customer currently in a segment."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships", db_index=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="segment_memberships")
    entered_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "customer"], name="segments_membership_unique"),
        ]
        indexes = [
            models.Index(fields=["segment", "-entered_at"], name="segments_membership_recent"),
        ]

    def __str__(self) -> str:
        return f"customer {self.customer_id} in segment {self.segment_id}"


class MembershipChange(models.Model):
    """One entry or exit, kept for timelines and charts after the customer or membership is gone."""

    class Kind(models.TextChoices):
        ENTERED = "entered", "Entered"
        EXITED = "exited", "Exited"

    class Cause(models.TextChoices):
        """Why membership changed: workflows fire Segment Entered/Exited on live changes only."""

        INGEST = "ingest", "Live update"  # an ingest batch changed the customer
        BUILD = "build", "Build"  # the segment was created or its condition changed
        REFRESH = "refresh", "Window refresh"  # time passed (a `within` window moved)
        RECONCILE = "reconcile", "Reconcile"  # the periodic rebuild caught up with a missed update
        MERGE = "merge", "Merged"  # the customer was merged into another
        ERASURE = "erasure", "Erased"  # the customer was erased

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="changes", db_index=False)
    # A plain id, not a foreign key: the history outlives the customer's deletion.
    customer_id = models.BigIntegerField()
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # With a database default: history rows are written by raw INSERTs (membership._record).
    cause = models.CharField(max_length=16, choices=Cause.choices, default=Cause.INGEST, db_default=Cause.INGEST)
    at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["customer_id", "-at"], name="segments_change_customer"),
            models.Index(fields=["segment", "-at"], name="segments_change_segment"),
            # Workflows read a segment's changes in id order from a stored cursor.
            models.Index(fields=["segment", "id"], name="segments_change_segment_id"),
        ]

    def __str__(self) -> str:
        return f"customer {self.customer_id} {self.kind} segment {self.segment_id} at {self.at:%Y-%m-%d %H:%M}"


class MemberCountDelta(models.Model):
    """Members a committed live update added to (or took from) a segment, not yet added to its
    `member_count`. Live updates of one segment run at once; each appends its own row, so none
    waits for another's lock on the segment's row before it commits. Folded into the count right
    after the update commits, by the next update of the segment, or by the window refresh."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+")
    delta = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.delta:+d} members of segment {self.segment_id}"
