"""The one place a platform view gets its organization and project from.

Every project-scoped view is wrapped by `project_view`: it returns 404 unless the signed-in user
is a member of the project's organization, so a non-member cannot even learn the project exists.
"""

from collections.abc import Callable
from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse

from accounts.auth import verified_login_required

from .models import Membership, Project, Role


def _membership(request: HttpRequest, org_slug: str) -> Membership:
    membership = (
        Membership.objects.select_related("organization").filter(user=request.user, organization__slug=org_slug).first()
    )
    if membership is None:
        raise Http404("No such organization")
    return membership


def organization_view(min_role: str = Role.MEMBER) -> Callable:
    """Wrap a view taking `org_slug`: sets request.organization and request.membership."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @verified_login_required
        @wraps(view)
        def wrapper(request: HttpRequest, org_slug: str, *args, **kwargs) -> HttpResponse:
            membership = _membership(request, org_slug)
            if not membership.has_role(min_role):
                raise PermissionDenied
            request.membership = membership
            request.organization = membership.organization
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def project_view(min_role: str = Role.MEMBER) -> Callable:
    """Wrap a view taking `org_slug` and `project_slug`: also sets request.project."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @verified_login_required
        @wraps(view)
        def wrapper(request: HttpRequest, org_slug: str, project_slug: str, *args, **kwargs) -> HttpResponse:
            membership = _membership(request, org_slug)
            project = Project.objects.filter(organization=membership.organization, slug=project_slug).first()
            if project is None:
                raise Http404("No such project")
            if not membership.has_role(min_role):
                raise PermissionDenied
            project.organization = membership.organization
            request.membership = membership
            request.organization = membership.organization
            request.project = project
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
