"""Workflows: versioned step graphs, the runs of customers through them, and the work they leave.

- `Workflow`: the draft definition (docs/workflows.md) and its status; `active_version` is what
  new enrolments run. Activating freezes the draft into a `WorkflowVersion`, never changed after.
- `Trigger`: an occurrence that may enrol customers (an event, a trait change, an API call),
  written in the same transaction as the change that caused it and deleted by the transaction that
  enrols from it, so a crash in between loses nothing and enrols no one twice.
- `Run`: one customer going through one version for one occurrence, unique per (workflow,
  customer, occurrence): a redelivered trigger cannot enrol twice. Its `wake_at` is when a worker
  must look at it next (claimed with FOR UPDATE SKIP LOCKED), never a Celery countdown.
- `RunStep`: the history of a run, one row per step entered (`seq` counts them), with the
  delivery or webhook attempts it produced. Effects are keyed by (run, seq).
- `WebhookAttempt`: one HTTP request of a webhook step, claimed queued → sending like a delivery.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from cdp.models import Customer
from organizations.models import Project
from timonier import clock


class Workflow(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        ARCHIVED = "archived", "Archived"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="workflows")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    # The draft being edited (docs/workflows.md); saved with its problems, refused at activation.
    definition = models.JSONField(default=dict)
    has_unpublished_changes = models.BooleanField(default=True)
    active_version = models.ForeignKey(
        "WorkflowVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The active version's trigger, copied at activation so ingest finds the workflows an event or
    # a trait change concerns with one indexed query.
    trigger_type = models.CharField(max_length=32, blank=True, default="")
    trigger_key = models.CharField(max_length=255, blank=True, default="")
    trigger_segment_id = models.BigIntegerField(null=True, blank=True)
    # Segment triggers read the segment's membership changes after this id.
    segment_cursor = models.BigIntegerField(default=0)
    # Event names that Wait Until steps of any version wait for (ingest records those events).
    wait_events = models.JSONField(default=list, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(default=clock.now)
    updated_at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="workflows_workflow_name_unique")]
        indexes = [
            models.Index(
                fields=["project", "status", "trigger_type", "trigger_key"], name="workflows_workflow_by_trigger"
            )
        ]

    def __str__(self) -> str:
        return self.name


class WorkflowVersion(models.Model):
    """An activated definition, frozen: runs started on it finish on it."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    published_at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [models.UniqueConstraint(fields=["workflow", "number"], name="workflows_version_unique")]

    def __str__(self) -> str:
        return f"{self.workflow} v{self.number}"


class Trigger(models.Model):
    """An occurrence waiting to enrol customers (or to wake runs waiting for an event)."""

    class Kind(models.TextChoices):
        EVENT = "event", "Event"
        ATTRIBUTE = "attribute", "Attribute changed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+", db_index=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The event's name, or the trait's.
    name = models.CharField(max_length=255)
    # Unique per project with `kind` and `name`: the event's message_id (and trait name).
    occurrence = models.CharField(max_length=300)
    # The event (type, event, properties, timestamp, message_id), or {"from": …, "to": …}.
    payload = models.JSONField()
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        indexes = [
            models.Index(fields=["project", "id"], name="workflows_trigger_project"),
            models.Index(fields=["customer"], name="workflows_trigger_customer"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} for customer {self.customer_id}"


class Run(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"  # due now: a worker will execute its current step
        WAITING = "waiting", "Waiting"  # at a delay or wait, until `wake_at`
        COMPLETED = "completed", "Completed"
        EXITED = "exited", "Exited"
        FAILED = "failed", "Failed"

    IN_PROGRESS = (Status.ACTIVE, Status.WAITING)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="runs", db_index=False)
    version = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="runs")
    # CASCADE: an erased customer's runs are deleted with them (what runs keep of them goes too).
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="workflow_runs", db_index=False)
    # What enrolled them: `event:<message_id>`, `segment:<change id>`, `api:<key>`, …
    occurrence = models.CharField(max_length=300)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # The step to execute (ACTIVE) or being waited on (WAITING); blank before the first step.
    current_step = models.CharField(max_length=64, blank=True, default="")
    # Count of steps entered: the current step's RunStep has this seq; effects are keyed by it.
    seq = models.PositiveIntegerField(default=0)
    # When a worker must look at this run next; null once it ended.
    wake_at = models.DateTimeField(null=True, blank=True)
    # Set while the workflow is paused: the run stays where it is.
    held = models.BooleanField(default=False)
    # At resume with "skip overdue emails": email steps reached before the next wait are skipped.
    skip_overdue_emails = models.BooleanField(default=False)
    # The state of the current wait: its deadline, and for a wait for an event, what to match.
    wait_until = models.DateTimeField(null=True, blank=True)
    wait_event = models.CharField(max_length=255, blank=True, default="")
    wait_match = models.JSONField(null=True, blank=True)
    # A wait's outcome recorded by whoever saw it happen (an event): the executor takes this output.
    resume_output = models.CharField(max_length=64, blank=True, default="")
    # Re-checked when the customer's data changes: a wait_until condition, an exit condition, a goal.
    watches_changes = models.BooleanField(default=False)
    # The trigger event (for `{{ event.* }}` and matches), and the API enrolment's data.
    trigger_event = models.JSONField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(default=clock.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")
    # The goal: converted when its condition held within the window (also after the run ended).
    goal_until = models.DateTimeField(null=True, blank=True)
    converted_at = models.DateTimeField(null=True, blank=True)
    # Set when a step needs a person (an interrupted send, a webhook that failed for good).
    attention = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow", "customer", "occurrence"], name="workflows_run_occurrence"),
        ]
        indexes = [
            # The executor's claim: due runs, oldest first. Partial, so ended and held runs cost nothing.
            models.Index(
                fields=["wake_at"],
                name="workflows_run_due",
                condition=Q(status__in=["active", "waiting"], held=False),
            ),
            models.Index(fields=["workflow", "customer"], name="workflows_run_customer"),
            models.Index(fields=["customer", "-started_at"], name="workflows_run_by_customer"),
            models.Index(fields=["workflow", "status", "-id"], name="workflows_run_status"),
            models.Index(
                fields=["project", "wait_event"],
                name="workflows_run_wait_event",
                condition=Q(status="waiting") & ~Q(wait_event=""),
            ),
            # Runs to re-check when their customer's data changes.
            models.Index(
                fields=["customer"], name="workflows_run_watching", condition=Q(status="waiting", watches_changes=True)
            ),
            # Runs whose goal may still convert (also after they ended): looked up for every batch.
            models.Index(
                fields=["customer"],
                name="workflows_run_goal_open",
                condition=Q(converted_at__isnull=True, goal_until__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.workflow_id} for customer {self.customer_id} ({self.status})"

    @property
    def in_progress(self) -> bool:
        return self.status in self.IN_PROGRESS


class RunStep(models.Model):
    """One step a run entered, with when, how it went, and what it produced."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    step_id = models.CharField(max_length=64)
    step_type = models.CharField(max_length=32)
    entered_at = models.DateTimeField(default=clock.now)
    left_at = models.DateTimeField(null=True, blank=True)
    # The output taken (`next`, `yes`, `timeout`, a cohort's key…), or what happened
    # (`skipped: unsubscribed`, `failed`, `interrupted`).
    outcome = models.CharField(max_length=255, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)
    delivery = models.ForeignKey(
        "emails.Delivery", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Who acted on it by hand (retry, skip, end), from the Runs needing attention view.
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="workflows_runstep_seq")]
        indexes = [models.Index(fields=["step_id", "entered_at"], name="workflows_runstep_step")]

    def __str__(self) -> str:
        return f"{self.step_type} {self.step_id} of run {self.run_id}"


class WebhookAttempt(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        # Claimed, then its worker died before the answer was recorded: not sent again by itself.
        INTERRUPTED = "interrupted", "Interrupted"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="webhook_attempts")
    seq = models.PositiveIntegerField()  # the RunStep's
    number = models.PositiveSmallIntegerField()  # 1, 2, … for retries
    # The `webhook-id` header: the same for every attempt of one step of one run.
    webhook_id = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    due_at = models.DateTimeField(default=clock.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    request = models.JSONField(default=dict, blank=True)  # method, url, headers (no secrets), body
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, default="")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["run", "seq", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq", "number"], name="workflows_webhookattempt_unique"),
        ]
        indexes = [
            models.Index(
                fields=["status", "due_at"],
                name="workflows_webhook_pending",
                condition=Q(status__in=["queued", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return f"webhook attempt {self.number} of run {self.run_id} step {self.seq} ({self.status})"


class WebhookSecret(models.Model):
    """A project's Standard Webhooks signing secret (`whsec_…`), encrypted at rest.

    During a rotation the previous secret keeps signing too (two signatures in the header) until
    `previous_expires_at`, so receivers can switch over without dropping a request.
    """

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="webhook_secret")
    secret = models.TextField()  # timonier.secrets.encrypt("whsec_…")
    previous_secret = models.TextField(blank=True, default="")
    previous_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=clock.now)
    rotated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"webhook secret of {self.project}"
