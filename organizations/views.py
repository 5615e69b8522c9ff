import json

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.auth import recovery_codes_pop, verified_login_required
from cdp import dashboard as cdp_dashboard
from emails import sender_policy
from timonier import charts, clock
from timonier import secrets as timonier_secrets

from . import api_keys, selectors, services
from .forms import ApiKeyForm, InvitationForm, OrganizationForm, ProjectForm, ProjectSettingsForm
from .models import Membership, Role
from .scoping import organization_view, project_view

# The raw key of a new API key travels from the form's POST to the page that shows it once in a
# short-lived cookie, encrypted, and never in the session: a session row is stored (and backed up)
# for weeks, and would keep the key if its page were never opened.
API_KEY_ONCE_COOKIE = "api_key_once"
API_KEY_ONCE_SECONDS = 300


def _apply_errors(form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        for error in errors:
            form.add_error(field if field in form.fields else None, error)


@verified_login_required
def selector(request: HttpRequest) -> HttpResponse:
    context = {
        "organizations": selectors.organizations_for_user(user=request.user),
        "recovery_codes": recovery_codes_pop(request),
    }
    return render(request, "organizations/selector.html", context)


@verified_login_required
def organization_new(request: HttpRequest) -> HttpResponse:
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            organization = services.organization_create(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            _apply_errors(form, exc)
        else:
            messages.success(request, f"Organization {organization.name} created. Now create its first project.")
            return redirect("organizations:selector")
    return render(request, "organizations/organization_new.html", {"form": form})


@organization_view(min_role=Role.ADMIN)
def project_new(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST or None, organization=request.organization)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.project_create(organization=request.organization, **form.cleaned_data)
        except ValidationError as exc:
            _apply_errors(form, exc)
        else:
            return redirect(project.get_absolute_url())
    return render(request, "organizations/project_new.html", {"form": form, "organization": request.organization})


@project_view()
def dashboard(request: HttpRequest) -> HttpResponse:
    now = clock.now()
    latest = cdp_dashboard.events_latest(request.project, limit=cdp_dashboard.LATEST_EVENTS)
    context = {
        "chart": charts.events_chart(cdp_dashboard.events_per_hour(request.project, now=now)),
        "customers": cdp_dashboard.customer_counts(request.project, now=now),
        "latest_events": latest,
        "latest_id": max((event.pk for event in latest), default=0),
        "latest_limit": cdp_dashboard.LATEST_EVENTS,
        "received_format": cdp_dashboard.RECEIVED_FORMAT,
    }
    if not latest:
        context["has_keys"] = request.project.api_keys.filter(revoked_at__isnull=True).exists()
        context["api_url"] = settings.API_URL
    return render(request, "organizations/dashboard.html", context)


@project_view()
def api_key_list(request: HttpRequest) -> HttpResponse:
    return render(
        request, "organizations/api_keys.html", {"api_keys": selectors.api_keys_list(project=request.project)}
    )


@project_view(min_role=Role.ADMIN)
def api_key_new(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        key, raw = api_keys.api_key_create(
            project=request.project,
            name=form.cleaned_data["name"],
            scope=form.cleaned_data["scope"],
            created_by=request.user,
        )
        created_url = reverse(
            "organizations:api_key_created", args=[request.organization.slug, request.project.slug, key.pk]
        )
        until = clock.now().timestamp() + API_KEY_ONCE_SECONDS
        once = {"id": key.pk, "user": str(request.user.pk), "raw": raw, "until": until}
        response = redirect(created_url)
        response.set_cookie(
            API_KEY_ONCE_COOKIE,
            timonier_secrets.encrypt(json.dumps(once)),
            max_age=API_KEY_ONCE_SECONDS,
            path=created_url,
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Lax",
        )
        return response
    return render(request, "organizations/api_key_new.html", {"form": form})


def _api_key_once(request: HttpRequest, key) -> str | None:
    """The raw key the cookie of `api_key_new` carries for this key and user, if it has not expired."""
    try:
        once = json.loads(timonier_secrets.decrypt(request.COOKIES.get(API_KEY_ONCE_COOKIE, "")))
    except (timonier_secrets.DecryptionError, ValueError):
        return None
    if (once.get("id"), once.get("user")) != (key.pk, str(request.user.pk)):
        return None
    return once.get("raw") if once.get("until", 0) >= clock.now().timestamp() else None


@project_view(min_role=Role.ADMIN)
def api_key_created(request: HttpRequest, pk: int) -> HttpResponse:
    key = selectors.api_key_get(project=request.project, pk=pk)
    if key is None:
        raise Http404
    raw = _api_key_once(request, key)
    if raw is None:
        messages.info(
            request, "An API key is shown only once, right after it is created. Create a new key if you lost it."
        )
        response = redirect("organizations:api_keys", request.organization.slug, request.project.slug)
    else:
        response = render(request, "organizations/api_key_created.html", {"api_key": key, "raw_key": raw})
        response["Cache-Control"] = "no-store"  # nor kept by the browser's cache
    response.delete_cookie(API_KEY_ONCE_COOKIE, path=request.path, samesite="Lax")
    return response


@require_POST
@project_view(min_role=Role.ADMIN)
def api_key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    key = selectors.api_key_get(project=request.project, pk=pk)
    if key is None:
        raise Http404
    api_keys.api_key_revoke(api_key=key)
    messages.success(request, f"API key {key.name} ({key.prefix}…) was revoked. Requests using it are refused.")
    return redirect("organizations:api_keys", request.organization.slug, request.project.slug)


@project_view()
def project_settings(request: HttpRequest) -> HttpResponse:
    can_edit = request.membership.has_role(Role.ADMIN)
    form = ProjectSettingsForm.for_project(request.project, data=request.POST or None)
    if request.method == "POST":
        if not can_edit:
            raise PermissionDenied
        if form.is_valid():
            try:
                services.project_update(project=request.project, **form.cleaned_data)
            except ValidationError as exc:
                _apply_errors(form, exc)
            else:
                messages.success(request, "Project settings saved.")
                return redirect("organizations:project_settings", request.organization.slug, request.project.slug)
    context = {
        "form": form,
        "can_edit": can_edit,
        "api_url": settings.API_URL,
        "default_rate_limit": settings.API_RATE_LIMIT,
        "default_sender_domain": sender_policy.default_sender_domain(),
    }
    return render(request, "organizations/project_settings.html", context)


@organization_view()
def members(request: HttpRequest) -> HttpResponse:
    can_invite = request.membership.has_role(Role.ADMIN)
    form = InvitationForm(request.POST or None)
    if request.method == "POST":
        if not can_invite:
            raise PermissionDenied
        if form.is_valid():
            try:
                invitation = services.invitation_create(
                    organization=request.organization, invited_by=request.user, **form.cleaned_data
                )
            except ValidationError as exc:
                _apply_errors(form, exc)
            else:
                messages.success(request, f"Invitation sent to {invitation.email}.")
                return redirect("organizations:members", request.organization.slug)
    context = {
        "form": form,
        "can_invite": can_invite,
        "memberships": selectors.memberships_list(organization=request.organization),
        "invitations": selectors.invitations_pending(organization=request.organization) if can_invite else [],
    }
    return render(request, "organizations/members.html", context)


@require_POST
@organization_view(min_role=Role.ADMIN)
def membership_remove(request: HttpRequest, pk: int) -> HttpResponse:
    membership = Membership.objects.filter(organization=request.organization, pk=pk).select_related("user").first()
    if membership is None:
        raise Http404
    try:
        services.membership_remove(membership=membership, by=request.membership)
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{membership.user.email} was removed from {request.organization.name}.")
    return redirect("organizations:members", request.organization.slug)


@require_POST
@organization_view(min_role=Role.ADMIN)
def invitation_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    invitation = selectors.invitations_pending(organization=request.organization).filter(pk=pk).first()
    if invitation is None:
        raise Http404
    services.invitation_revoke(invitation=invitation)
    messages.success(request, f"The invitation to {invitation.email} was withdrawn.")
    return redirect("organizations:members", request.organization.slug)


def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """The link in an invitation email. Anyone may open it; accepting needs the invited account."""
    found = services.invitation_find(token=token)
    if found is None:
        return render(request, "organizations/invitation_invalid.html", status=410)
    here = reverse("organizations:invitation", args=[token])
    signed_in = request.user.is_authenticated and request.user.is_verified()
    if request.method == "POST" and signed_in:
        try:
            membership = services.invitation_accept(invitation=found, user=request.user)
        except PermissionDenied as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"You joined {membership.organization.name}.")
            return redirect("organizations:selector")
    context = {"invitation": found, "signed_in": signed_in, "here": here}
    return render(request, "organizations/invitation.html", context)
