"""Reads of segments, always within one project."""

from django.db.models import QuerySet

from cdp.models import Customer
from organizations.models import Project

from .conditions import referenced_events, referenced_traits, uses_relative_window
from .models import Membership, MembershipChange, Segment


def segments_list(project: Project) -> QuerySet[Segment]:
    return Segment.objects.filter(project=project).order_by("name", "pk")


def segment_get(project: Project, segment_id: int) -> Segment:
    """The project's segment; `Segment.DoesNotExist` for another project's id."""
    return Segment.objects.get(project=project, pk=segment_id)


def segment_members(project: Project, segment: Segment) -> QuerySet[Membership]:
    """Members, most recent entries first (the index `segments_membership_recent`)."""
    return (
        Membership.objects.filter(segment=segment, segment__project=project)
        .select_related("customer")
        .order_by("-entered_at", "-pk")
    )


def customer_segments(project: Project, customer: Customer) -> QuerySet[Segment]:
    return Segment.objects.filter(project=project, memberships__customer=customer).order_by("name", "pk")


def customer_segment_changes(project: Project, customer_id: int) -> QuerySet[MembershipChange]:
    """The customer's entries and exits, newest first, for the timeline."""
    return (
        MembershipChange.objects.filter(customer_id=customer_id, segment__project=project)
        .select_related("segment")
        .order_by("-at", "-pk")
    )


def segments_using_relative_windows(project: Project) -> list[Segment]:
    """Segments whose membership can change with time alone, so a periodic task re-evaluates them."""
    return [segment for segment in segments_list(project) if uses_relative_window(segment.condition)]


def segments_affected_by(project: Project, *, traits: set[str], events: set[str]) -> list[Segment]:
    """Segments whose condition reads one of `traits` (or a trait nested in or containing one) or
    counts one of `events`: the only ones a batch with those changes can affect."""
    affected = []
    for segment in segments_list(project):
        read = referenced_traits(segment.condition)
        if referenced_events(segment.condition) & events or any(
            _overlaps(name, changed) for name in read for changed in traits
        ):
            affected.append(segment)
    return affected


def _overlaps(read: str, changed: str) -> bool:
    # Setting `address` changes `address.city`, and setting `address.city` changes `address`.
    return read == changed or read.startswith(changed + ".") or changed.startswith(read + ".")
