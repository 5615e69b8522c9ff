"""Reads of the organizations domain. Every read starts from the user or the project."""

from django.db.models import Prefetch, QuerySet

from accounts.models import User

from .models import ApiKey, Invitation, Membership, Organization, Project


def organizations_for_user(*, user: User) -> QuerySet[Organization]:
    return (
        Organization.objects.filter(memberships__user=user)
        .prefetch_related(Prefetch("projects", queryset=Project.objects.order_by("name")))
        .order_by("name")
    )


def api_keys_list(*, project: Project) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(project=project).select_related("created_by").order_by("revoked_at", "-created_at")


def api_key_get(*, project: Project, pk: int) -> ApiKey | None:
    return ApiKey.objects.filter(project=project, pk=pk).first()


def memberships_list(*, organization: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(organization=organization).select_related("user").order_by("user__email")


def invitations_pending(*, organization: Organization) -> QuerySet[Invitation]:
    return Invitation.objects.filter(organization=organization, accepted_at__isnull=True).order_by("-created_at")
