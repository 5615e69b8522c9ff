"""Writes to segments. A condition is validated here, so no caller can store an invalid one."""

from django.core.exceptions import ValidationError
from django.db import transaction

from organizations.models import Project
from timonier import clock

from .conditions import validate
from .models import Segment


def segment_create(*, project: Project, name: str, description: str = "", condition: dict) -> Segment:
    """A new segment in `building` status; its members are computed by `membership_rebuild`."""
    segment = Segment(project=project, name=name, description=description, condition=condition)
    _check(segment)
    segment.save()
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
    if condition is not None and condition != changed.condition:
        changed.condition = condition
        changed.status = Segment.Status.BUILDING
    _check(changed)
    changed.updated_at = clock.now()
    changed.save()
    segment.refresh_from_db()
    return segment


def segment_delete(*, segment: Segment) -> None:
    """Delete the segment with its memberships and their history."""
    with transaction.atomic():
        segment.delete()


def _check(segment: Segment) -> None:
    """Every problem at once: the condition's, each with its JSON path, and the other fields'."""
    errors: dict[str, list[str]] = {}
    problems = validate(segment.condition)
    if problems:
        errors["condition"] = problems
    try:
        segment.full_clean(exclude=["condition", "project", "status", "member_count", "last_computed_at"])
    except ValidationError as exc:
        for key, messages in exc.message_dict.items():
            errors.setdefault(key, []).extend(messages)
    if errors:
        raise ValidationError(errors)
