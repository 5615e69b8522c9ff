"""Writes to segments. A condition is validated here, so no caller can store an invalid one.

A segment created, or whose condition changed, is `building` until a worker has computed its
members (`tasks.segment_build_task`, sent when the transaction commits).
"""

import logging

from django.core.exceptions import ValidationError
from django.db import transaction

from organizations.models import Project
from timonier import clock

# The module, not its task: tasks call back into these services (a build that fails).
from . import tasks
from .conditions import referenced_segments, validate
from .models import Segment

logger = logging.getLogger(__name__)

BUILD_ERROR_MAX = 2_000


def segment_create(*, project: Project, name: str, description: str = "", condition: dict) -> Segment:
    """A new segment in `building` status; a worker computes its members."""
    segment = Segment(project=project, name=name, description=description, condition=condition)
    _check(segment)
    with transaction.atomic():
        segment.save()
        _build_on_commit(segment)
    return segment


def segment_update(
    *, segment: Segment, name: str | None = None, description: str | None = None, condition: dict | None = None
) -> Segment:
    """Change the given fields; a changed condition puts the segment back in `building` status
    until `membership_rebuild` recomputes it. On any problem nothing is saved and `segment` is
    left as it was."""
    changed = Segment.objects.get(pk=segment.pk)
    if name is not None:
        changed.name = name
    if description is not None:
        changed.description = description
    rebuild = condition is not None and condition != changed.condition
    if rebuild:
        changed.condition = condition
        changed.status = Segment.Status.BUILDING  # a failed segment too: its new condition gets its chance
        changed.build_error = ""
    _check(changed)
    changed.updated_at = clock.now()
    with transaction.atomic():
        changed.save()
        if rebuild:
            _build_on_commit(changed)
    segment.refresh_from_db()
    return segment


def segment_delete(*, segment: Segment) -> None:
    """Delete the segment with its memberships and their history; refused (ValidationError)
    while another segment's condition uses it."""
    with transaction.atomic():
        users = [
            other
            for other in Segment.objects.filter(project_id=segment.project_id).exclude(pk=segment.pk)
            if segment.pk in referenced_segments(other.condition)
        ]
        if users:
            names = ", ".join(f'"{other.name}"' for other in users)
            raise ValidationError(f"This segment is used by the condition of {names}: change that first.")
        segment.delete()


def segment_build_failed(*, segment_id: int, condition, error: str) -> bool:
    """Mark the segment failed with `error`, unless its condition changed since `condition` failed
    (the new one has its own build coming). A failed segment is left out of live updates until
    its condition changes; the hourly reconcile still tries it, so a passing cause (a database
    restart) heals. Returns whether it was marked."""
    with transaction.atomic():
        segment = Segment.objects.select_for_update().filter(pk=segment_id).first()
        if segment is None or segment.condition != condition:
            return False
        Segment.objects.filter(pk=segment_id).update(status=Segment.Status.FAILED, build_error=error[:BUILD_ERROR_MAX])
    logger.warning("segment %s: build failed: %s", segment_id, error[:BUILD_ERROR_MAX])
    return True


def _build_on_commit(segment: Segment) -> None:
    segment_id = segment.pk

    def send():
        try:
            tasks.segment_build_task.delay(segment_id)
        except Exception:  # the broker is down: the periodic refresh builds what stays `building`
            logger.exception("segment %s: could not queue its build", segment_id)

    transaction.on_commit(send)


def _check(segment: Segment) -> None:
    """Every problem at once: the condition's, each with its JSON path, and the other fields'."""
    errors: dict[str, list[str]] = {}
    problems = validate(segment.condition) or _segment_reference_problems(segment)
    if problems:
        errors["condition"] = problems
    try:
        segment.full_clean(exclude=["condition", "project", "status", "member_count", "last_computed_at"])
    except ValidationError as exc:
        for key, messages in exc.message_dict.items():
            errors.setdefault(key, []).extend(messages)
    if errors:
        raise ValidationError(errors)


def _segment_reference_problems(segment: Segment) -> list[str]:
    """Segment conditions must name segments of the same project, and never lead back to this one."""
    references = list(_segment_references(segment.condition, ""))
    if not references:
        return []
    conditions = dict(Segment.objects.filter(project_id=segment.project_id).values_list("pk", "condition"))
    if segment.pk is not None:
        conditions[segment.pk] = segment.condition
    problems = []
    for path, pk in references:
        where = f"{path}.segment_id" if path else "segment_id"
        if pk not in conditions:
            problems.append(f"{where}: no segment {pk} in this project")
        elif pk == segment.pk:
            problems.append(f"{where}: a segment cannot use itself")
        elif segment.pk is not None and _leads_to(pk, segment.pk, conditions):
            problems.append(f"{where}: this would make a cycle: segment {pk} uses this segment")
    return problems


def _segment_references(node, path: str):
    """(JSON path, segment id) of every segment condition, in document order."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind == "segment":
        yield path, node["segment_id"]
    elif kind in ("and", "or"):
        for index, child in enumerate(node["conditions"]):
            yield from _segment_references(child, f"{path}.conditions[{index}]" if path else f"conditions[{index}]")
    elif kind == "not":
        yield from _segment_references(node["condition"], f"{path}.condition" if path else "condition")


def _leads_to(start: int, target: int, conditions: dict[int, dict]) -> bool:
    """Whether segment `start` uses `target`, directly or through other segments."""
    seen, pending = set(), [start]
    while pending:
        current = pending.pop()
        if current == target:
            return True
        if current in seen or current not in conditions:
            continue
        seen.add(current)
        pending.extend(referenced_segments(conditions[current]))
    return False
