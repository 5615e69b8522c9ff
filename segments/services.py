"""Writes to segments. A condition is validated here, so no caller can store an invalid one.

A segment created, or whose condition changed, is `building` until a worker has computed its
members (`tasks.segment_build_task`, sent when the transaction commits).
"""

from django.core.exceptions import ValidationError
from django.db import transaction

from organizations.models import Project
from timonier import clock

from .conditions import referenced_segments, validate
from .models import Segment


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
        changed.status = Segment.Status.BUILDING
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


def _build_on_commit(segment: Segment) -> None:
    from .tasks import segment_build_task  # tasks import the services' models; import when used

    segment_id = segment.pk
    transaction.on_commit(lambda: segment_build_task.delay(segment_id))


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
    used = referenced_segments(segment.condition)
    if not used:
        return []
    conditions = dict(Segment.objects.filter(project_id=segment.project_id).values_list("pk", "condition"))
    problems = [
        f"segment_id: no segment {pk} in this project" for pk in sorted(used) if pk not in conditions
    ]
    if segment.pk is not None:
        conditions[segment.pk] = segment.condition
        if segment.pk in used:
            problems.append("segment_id: a segment cannot use itself")
        else:
            # Depth-first through the segments used, looking for this one.
            seen, pending = set(), list(used)
            while pending:
                current = pending.pop()
                if current == segment.pk:
                    problems.append("segment_id: this would make a cycle: the segments used lead back to this one")
                    break
                if current in seen or current not in conditions:
                    continue
                seen.add(current)
                pending.extend(referenced_segments(conditions[current]))
    return problems
