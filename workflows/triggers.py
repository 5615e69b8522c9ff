"""From what happened to who enters: trigger rows, segment changes, and set-wise enrolment.

Durability: an ingest batch writes `Trigger` rows for the events and trait changes an active
workflow (or a waiting run) listens to inside its own transaction (`record_triggers`, on
`cdp.signals.batch_stored`); segment triggers read `MembershipChange` rows, committed with the
membership they record, from each workflow's `segment_cursor`. `triggers_process` consumes both
for one project in one transaction: it enrols, advances the cursors and deletes the trigger rows
together, so a crash redoes it whole. A run is unique per (workflow, customer, occurrence), so
nothing redelivered enrols twice. Signals only ring the doorbell (`triggers_process_task`); the
beat sweep is the backstop.
"""

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef

from cdp.models import Customer
from segments.conditions import matches
from segments.conditions.evaluation import MISSING, json_equal, lookup
from segments.membership import changes_committed_through
from segments.models import Membership, MembershipChange
from timonier import clock
from timonier.bulk import bulk_insert, insert_rows
from timonier.sql import AmongIds

from .definition import first_step, watches_changes
from .models import Run, Trigger, Workflow, WorkflowVersion

logger = logging.getLogger(__name__)

BATCH = 5000
# Segment Entered/Exited fire on live changes, not on a segment's (re)build nor on a customer
# merged away or erased.
SILENT_CAUSES = (MembershipChange.Cause.BUILD, MembershipChange.Cause.MERGE, MembershipChange.Cause.ERASURE)
LOCK_NAMESPACE = 7_302  # pg advisory lock: one trigger processor per project at a time


class EnrolmentRefused(Exception):
    """The workflow's frequency (or a run in progress) keeps this customer out now."""


def occurrence_key(*parts) -> str:
    key = ":".join(str(part) for part in parts)
    if len(key) <= 200:
        return key
    return f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def trigger_name(trait: str) -> str:
    """Trait triggers are recorded by top-level name (an identify replaces top-level values)."""
    return trait.split(".", 1)[0]


def listeners(project_id: int) -> tuple[set[str], set[str], dict[str, set[int]]]:
    """Event names and top-level trait names that active workflows or waiting runs listen to; and
    the event names only "Once per customer" workflows start on (no waiting run listens for them),
    each with those workflows' ids: a customer enrolled in all of them needs no trigger row."""
    events: set[str] = set()
    traits: set[str] = set()
    once: dict[str, set[int]] = {}
    not_once: set[str] = set()
    waited: set[str] = set()
    rows = Workflow.objects.filter(
        project_id=project_id, status__in=[Workflow.Status.ACTIVE, Workflow.Status.PAUSED]
    ).values_list("pk", "status", "trigger_type", "trigger_key", "wait_events", "active_version__definition")
    for pk, status, kind, key, wait_events, definition in rows:
        events.update(wait_events or ())
        waited.update(wait_events or ())
        if status != Workflow.Status.ACTIVE:
            continue
        if kind == "event":
            events.add(key)
            frequency = ((definition or {}).get("frequency") or {"type": "once"}).get("type")
            if frequency == "once":
                once.setdefault(key, set()).add(pk)
            else:
                not_once.add(key)
        elif kind == "attribute_changed":
            traits.add(trigger_name(key))
    settled = {name: ids for name, ids in once.items() if name not in not_once and name not in waited}
    return events, traits, settled


def _enrolled_everywhere(settled: dict[str, set[int]], events: list) -> set[tuple[str, int]]:
    """(event name, customer id) of the batch's events whose customer already has a run in every
    Once-per-customer workflow the event starts: enrolment would refuse them all (one query)."""
    customers = {customer_id for customer_id, message in events if message["event"] in settled}
    if not customers:
        return set()
    workflow_ids = set().union(*settled.values())
    enrolled: dict[int, set[int]] = defaultdict(set)
    # One array parameter each (AmongIds), not an IN list of a placeholder per customer.
    pairs = (
        Run.objects.filter(AmongIds(F("workflow_id"), workflow_ids), AmongIds(F("customer_id"), customers))
        .values_list("workflow_id", "customer_id")
        .distinct()
    )
    for workflow_id, customer_id in pairs:
        enrolled[customer_id].add(workflow_id)
    return {(name, customer) for name, ids in settled.items() for customer in customers if ids <= enrolled[customer]}


def record_triggers(*, project_id: int, events: list, trait_changes: list) -> int:
    """Inside an ingest batch's transaction: the trigger rows for what workflows listen to."""
    event_names, trait_names, settled = listeners(project_id)
    if not event_names and not trait_names:
        return 0
    # A busy shop's Once-per-customer purchase workflow would otherwise write (and then delete) a
    # trigger row for every purchase of every customer it already enrolled, for ever.
    skip = _enrolled_everywhere(settled, events)
    # Rows as plain dicts (no model instances): a batch of purchases makes one per event.
    now = clock.now().isoformat()
    rows = []
    for customer_id, message in events:
        if message["event"] in event_names and (message["event"], customer_id) not in skip:
            payload = {
                "type": "track",
                "event": message["event"],
                "properties": message["properties"],
                "timestamp": message["at"].isoformat(),
                "message_id": message["message_id"],
            }
            rows.append(
                {
                    "project_id": project_id,
                    "customer_id": customer_id,
                    "kind": Trigger.Kind.EVENT.value,
                    "name": message["event"],
                    "occurrence": message["message_id"],
                    "payload": payload,
                    "created_at": now,
                }
            )
    for customer_id, message_id, changed in trait_changes:
        for trait, old, new in changed:
            if trait in trait_names:
                rows.append(
                    {
                        "project_id": project_id,
                        "customer_id": customer_id,
                        "kind": Trigger.Kind.ATTRIBUTE.value,
                        "name": trait,
                        "occurrence": message_id,
                        "payload": {"from": old, "to": new},
                        "created_at": now,
                    }
                )
    if rows:
        insert_rows(Trigger, rows)
        from .tasks import triggers_process_task

        transaction.on_commit(lambda: triggers_process_task.delay(project_id))
    return len(rows)


@dataclass
class Candidate:
    customer_id: int
    occurrence: str
    trigger_event: dict | None = None
    data: dict | None = None


def _lock(project_id: int) -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: the IMMEDIATE transaction holds the database's write lock
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, project_id])
        return bool(cursor.fetchone()[0])


def triggers_process(*, project_id: int, now: datetime | None = None) -> int | None:
    """Consume a project's pending trigger rows and segment changes; returns how many runs were
    enrolled, or None when another worker has the project."""
    now = now or clock.now()
    with transaction.atomic():
        if not _lock(project_id):
            return None
        workflows = list(
            Workflow.objects.filter(project_id=project_id, status=Workflow.Status.ACTIVE)
            .select_related("active_version")
            .select_for_update(of=("self",))
            if connection.features.has_select_for_update_of
            else Workflow.objects.filter(project_id=project_id, status=Workflow.Status.ACTIVE).select_related(
                "active_version"
            )
        )
        rows = list(Trigger.objects.filter(project_id=project_id).order_by("id")[:BATCH])
        candidates: dict[int, list[Candidate]] = defaultdict(list)
        by_event: dict[str, list[Workflow]] = defaultdict(list)
        by_trait: dict[str, list[Workflow]] = defaultdict(list)
        for workflow in workflows:
            if workflow.trigger_type == "event":
                by_event[workflow.trigger_key].append(workflow)
            elif workflow.trigger_type == "attribute_changed":
                by_trait[trigger_name(workflow.trigger_key)].append(workflow)
        for row in rows:
            if row.kind == Trigger.Kind.EVENT:
                for workflow in by_event.get(row.name, ()):
                    if _event_passes(workflow.active_version.definition["trigger"], row.payload, now):
                        key = occurrence_key("event", row.occurrence)
                        candidates[workflow.pk].append(Candidate(row.customer_id, key, trigger_event=row.payload))
            else:
                for workflow in by_trait.get(row.name, ()):
                    trigger = workflow.active_version.definition["trigger"]
                    change = _trait_change(trigger, row.payload)
                    if change is not None:
                        key = occurrence_key("attribute", row.occurrence, trigger["trait"])
                        candidates[workflow.pk].append(Candidate(row.customer_id, key, trigger_event=change))
        for workflow in workflows:
            if workflow.trigger_type in ("segment_entered", "segment_exited"):
                candidates[workflow.pk].extend(_segment_candidates(workflow))
        enrolled = 0
        for workflow in workflows:
            if candidates.get(workflow.pk):
                enrolled += len(enrol(workflow, workflow.active_version, candidates[workflow.pk], now=now))
        _resume_waits(project_id, [row for row in rows if row.kind == Trigger.Kind.EVENT], now)
        if rows:
            Trigger.objects.filter(pk__in=[row.pk for row in rows]).delete()
        if enrolled:
            _wake_executor_on_commit()
    if len(rows) == BATCH:
        from .tasks import triggers_process_task

        triggers_process_task.delay(project_id)
    return enrolled


def _wake_executor_on_commit() -> None:
    from .tasks import runs_execute_task

    transaction.on_commit(lambda: runs_execute_task.delay())


def _event_passes(trigger: dict, payload: dict, now: datetime) -> bool:
    where = trigger.get("where") or []
    if not where:
        return True
    probe = {"type": "event", "event_name": payload["event"], "where": where}
    event = {"name": payload["event"], "type": "track", "properties": payload["properties"], "timestamp": now}
    return matches(probe, traits={}, events=[event], now=now)


def _trait_change(trigger: dict, payload: dict) -> dict | None:
    """The change of the trigger's (dotted) trait in a top-level trait change, or None."""
    rest = trigger["trait"].split(".", 1)[1:] or None
    old, new = payload.get("from"), payload.get("to")
    if rest:
        old = lookup(old, rest[0]) if isinstance(old, dict) else MISSING
        new = lookup(new, rest[0]) if isinstance(new, dict) else MISSING
    old = None if old is MISSING else old
    new = None if new is MISSING else new
    if old is not None and new is not None and json_equal(old, new):
        return None
    if old is None and new is None:
        return None
    if "from" in trigger and not json_equal(old, trigger["from"]):
        return None
    if "to" in trigger and not json_equal(new, trigger["to"]):
        return None
    return {"type": "attribute_changed", "trait": trigger["trait"], "from": old, "to": new}


def _segment_candidates(workflow: Workflow) -> list[Candidate]:
    trigger = workflow.active_version.definition["trigger"]
    kind = MembershipChange.Kind.ENTERED if trigger["type"] == "segment_entered" else MembershipChange.Kind.EXITED
    unread = MembershipChange.objects.filter(segment_id=trigger["segment_id"], pk__gt=workflow.segment_cursor)
    # Live updates of one segment run concurrently, so ids can commit out of order: only up to an
    # id below which every change has committed, or the cursor would step over a late one.
    horizon = changes_committed_through(trigger["segment_id"])
    if horizon is not None:
        unread = unread.filter(pk__lte=horizon)
    changes = list(unread.order_by("pk").values_list("pk", "customer_id", "kind", "cause")[:BATCH])
    if not changes:
        return []
    Workflow.objects.filter(pk=workflow.pk).update(segment_cursor=changes[-1][0])
    workflow.segment_cursor = changes[-1][0]
    event = {"type": trigger["type"], "segment_id": trigger["segment_id"]}
    return [
        Candidate(customer_id, occurrence_key("segment", pk), trigger_event=event)
        for pk, customer_id, change_kind, cause in changes
        if change_kind == kind and cause not in SILENT_CAUSES
    ]


def enrol(workflow: Workflow, version: WorkflowVersion, candidates: list[Candidate], *, now: datetime) -> list[Run]:
    """Start runs for the candidates the frequency lets in, in order; the unique key (workflow,
    customer, occurrence) drops any occurrence already enrolled. Returns the runs made (as sent
    to the database: on PostgreSQL a conflicting one is skipped by the insert)."""
    definition = version.definition
    frequency = definition.get("frequency") or {"type": "once"}
    concurrent = bool(definition.get("allow_concurrent_runs"))
    period = timedelta(days=frequency.get("days", 0))
    ids = {candidate.customer_id for candidate in candidates}
    alive = set(Customer.objects.filter(project_id=workflow.project_id, pk__in=ids).values_list("pk", flat=True))
    state: dict[int, list] = {}  # customer id -> [ever enrolled, in progress, last start]
    for customer_id, status, started_at in Run.objects.filter(workflow=workflow, customer_id__in=alive).values_list(
        "customer_id", "status", "started_at"
    ):
        seen = state.setdefault(customer_id, [False, False, None])
        seen[0] = True
        seen[1] = seen[1] or status in Run.IN_PROGRESS
        seen[2] = started_at if seen[2] is None or started_at > seen[2] else seen[2]
    first = first_step(definition)
    watch = watches_changes(definition)
    goal = definition.get("goal")
    goal_until = now + timedelta(days=goal["within_days"]) if goal else None
    runs = []
    for candidate in candidates:
        if candidate.customer_id not in alive:
            continue
        ever, running, last = state.get(candidate.customer_id, [False, False, None])
        if frequency["type"] == "once" and ever:
            continue
        if frequency["type"] == "once_per_period" and last is not None and now - last < period:
            continue
        if running and not concurrent:
            continue
        state[candidate.customer_id] = [True, True, now]
        runs.append(
            Run(
                project_id=workflow.project_id,
                workflow=workflow,
                version=version,
                customer_id=candidate.customer_id,
                occurrence=candidate.occurrence,
                status=Run.Status.ACTIVE,
                current_step=first or "",
                wake_at=now,
                watches_changes=watch,
                trigger_event=candidate.trigger_event,
                data=candidate.data or {},
                started_at=now,
                goal_until=goal_until,
            )
        )
    bulk_insert(Run, runs, ignore_conflicts=True)
    return runs


def enrol_existing_members(workflow: Workflow, version: WorkflowVersion, *, now: datetime) -> int:
    """ "Also enrol customers already in the segment", at activation."""
    segment_id = version.definition["trigger"]["segment_id"]
    members = Membership.objects.filter(segment_id=segment_id).values_list("customer_id", flat=True)
    candidates = [
        Candidate(customer_id, occurrence_key("existing", segment_id, version.number), {"type": "segment_entered"})
        for customer_id in members.iterator()
    ]
    return len(enrol(workflow, version, candidates, now=now))


def _resume_waits(project_id: int, event_rows: list[Trigger], now: datetime) -> int:
    """Runs waiting for a later event that just arrived move on (output `met`)."""
    if not event_rows:
        return 0
    from .executor import event_matches

    names = {row.name for row in event_rows}
    customers = {row.customer_id for row in event_rows}
    waiting = list(
        Run.objects.filter(
            project_id=project_id, status=Run.Status.WAITING, wait_event__in=names, customer_id__in=customers
        ).values_list("pk", "customer_id", "wait_event", "wait_match", "seq", "trigger_event")
    )
    resumed = 0
    for pk, customer_id, name, expected, seq, trigger_event in waiting:
        trigger_id = (trigger_event or {}).get("message_id")
        for row in event_rows:
            if row.customer_id != customer_id or row.name != name or row.occurrence == trigger_id:
                continue
            if event_matches(row.payload.get("properties") or {}, expected):
                resumed += Run.objects.filter(pk=pk, seq=seq, status=Run.Status.WAITING, resume_output="").update(
                    resume_output="met", wake_at=now
                )
                break
    if resumed:
        _wake_executor_on_commit()
    return resumed


def projects_with_pending_triggers() -> set[int]:
    """Projects with trigger rows waiting, or a segment-triggered workflow behind its segment."""
    projects = set(Trigger.objects.values_list("project_id", flat=True).distinct())
    behind = Workflow.objects.filter(
        status=Workflow.Status.ACTIVE, trigger_type__in=["segment_entered", "segment_exited"]
    ).filter(
        Exists(
            MembershipChange.objects.filter(
                segment_id=OuterRef("trigger_segment_id"), pk__gt=OuterRef("segment_cursor")
            )
        )
    )
    projects.update(behind.values_list("project_id", flat=True))
    return projects


def check_goals_after_end(project_id: int, customer_ids: list[int], *, now: datetime) -> int:
    """Runs that ended but are still inside their goal window convert when the goal now holds."""
    from .evaluation import holds

    # One array parameter for the batch's customers (see receivers.recheck_runs); the partial index
    # workflows_run_goal_open holds only the runs whose goal is still open.
    window = Run.objects.filter(
        AmongIds(F("customer_id"), customer_ids),
        project_id=project_id,
        converted_at__isnull=True,
        goal_until__gte=now,
    ).exclude(status__in=Run.IN_PROGRESS)
    runs = list(window.select_related("version")[:1000])
    if not runs:
        return 0
    customers = {c.pk: c for c in Customer.objects.filter(pk__in={run.customer_id for run in runs})}
    converted = 0
    for run in runs:
        goal = run.version.definition.get("goal")
        customer = customers.get(run.customer_id)
        if goal and customer is not None and holds(goal["condition"], customer=customer, now=now):
            converted += Run.objects.filter(pk=run.pk, converted_at__isnull=True).update(converted_at=now)
    return converted
