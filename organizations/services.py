"""Writes of the organizations domain: organizations, projects, memberships, invitations."""

import hashlib
import logging
import secrets
import zoneinfo
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.core.validators import DomainNameValidator
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse

from accounts.models import User
from timonier import clock

from .api_keys import generation_bump
from .models import Invitation, Membership, Organization, Project, Role

logger = logging.getLogger(__name__)


def organization_create(*, user: User, name: str, slug: str) -> Organization:
    try:
        with transaction.atomic():
            organization = Organization.objects.create(name=name, slug=slug)
            Membership.objects.create(organization=organization, user=user, role=Role.OWNER)
    except IntegrityError as exc:
        raise ValidationError({"slug": "This slug is already taken. Choose another."}) from exc
    return organization


def project_create(*, organization: Organization, name: str, slug: str) -> Project:
    try:
        with transaction.atomic():
            return Project.objects.create(organization=organization, name=name, slug=slug)
    except IntegrityError as exc:
        raise ValidationError({"slug": "This organization already has a project with this slug."}) from exc


MAX_SENDING_DOMAINS = 50
_domain_validator = DomainNameValidator()


def sending_domains_clean(domains: list[str]) -> list[str]:
    """Lower-cased, each once, in the order given; ValidationError naming every invalid one."""
    cleaned, invalid = [], []
    for domain in domains:
        domain = domain.strip().rstrip(".").lower()
        if not domain:
            continue
        try:
            _domain_validator(domain)
        except ValidationError:
            invalid.append(domain)
            continue
        if domain not in cleaned:
            cleaned.append(domain)
    if invalid:
        raise ValidationError(
            [f"“{domain}” is not a domain name (for example mail.example.com)." for domain in invalid]
        )
    if len(cleaned) > MAX_SENDING_DOMAINS:
        raise ValidationError(f"At most {MAX_SENDING_DOMAINS} domains.")
    return cleaned


def project_update(
    *,
    project: Project,
    name: str,
    ingest_rate_limit: int | None,
    timezone: str | None = None,
    sending_domains: list[str] | None = None,
) -> Project:
    """Validate, then save every field or none (errors keyed by field). None leaves a field as it is."""
    errors: dict[str, list[str]] = {}
    if timezone is not None and timezone not in zoneinfo.available_timezones():
        errors["timezone"] = [f"“{timezone}” is not a time zone name (for example Europe/Paris)."]
    if sending_domains is not None:
        try:
            sending_domains = sending_domains_clean(sending_domains)
        except ValidationError as exc:
            errors["sending_domains"] = exc.messages
    if errors:
        raise ValidationError(errors)
    project.name = name
    project.ingest_rate_limit = ingest_rate_limit
    fields = ["name", "ingest_rate_limit"]
    if timezone is not None:
        project.timezone = timezone
        fields.append("timezone")
    if sending_domains is not None:
        project.sending_domains = sending_domains
        fields.append("sending_domains")
    project.save(update_fields=fields)
    generation_bump()  # API processes remember keys with their project: let them reload it
    return project


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_create(*, organization: Organization, email: str, role: str, invited_by: User) -> Invitation:
    email = User.objects.normalize_email(email).lower()
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise ValidationError({"email": "This person is already a member of the organization."})
    if (
        role == Role.OWNER
        and not Membership.objects.filter(organization=organization, user=invited_by, role=Role.OWNER).exists()
    ):
        raise ValidationError({"role": "Only an owner can invite another owner."})
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organization=organization, email=email, role=role, token_hash=_token_hash(token), invited_by=invited_by
    )
    link = settings.PLATFORM_URL + reverse("organizations:invitation", args=[token])
    context = {"invitation": invitation, "link": link, "inviter": invited_by}
    send_mail(
        subject=f"{invited_by.get_full_name()} invited you to {organization.name} on Timonier",
        message=render_to_string("organizations/emails/invitation.txt", context),
        from_email=None,
        recipient_list=[email],
    )
    logger.info("invitation sent organization=%s invitation=%s", organization.pk, invitation.pk)
    return invitation


def invitation_find(*, token: str) -> Invitation | None:
    """A pending, unexpired invitation by its token."""
    cutoff = clock.now() - timedelta(seconds=settings.INVITATION_MAX_AGE)
    return (
        Invitation.objects.select_related("organization", "invited_by")
        .filter(token_hash=_token_hash(token), accepted_at__isnull=True, created_at__gte=cutoff)
        .first()
    )


def invitation_accept(*, invitation: Invitation, user: User) -> Membership:
    if invitation.email.lower() != user.email.lower():
        raise PermissionDenied(f"This invitation was sent to {invitation.email}; you are signed in as {user.email}.")
    with transaction.atomic():
        claimed = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).update(
            accepted_at=clock.now(), accepted_by=user
        )
        if not claimed:
            raise PermissionDenied("This invitation has already been used.")
        membership, _ = Membership.objects.get_or_create(
            organization=invitation.organization, user=user, defaults={"role": invitation.role}
        )
    return membership


def invitation_revoke(*, invitation: Invitation) -> None:
    Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).delete()


def membership_remove(*, membership: Membership, by: Membership) -> None:
    if membership.role == Role.OWNER and by.role != Role.OWNER:
        raise PermissionDenied("Only an owner can remove an owner.")
    if membership.role == Role.OWNER and not (
        Membership.objects.filter(organization=membership.organization, role=Role.OWNER)
        .exclude(pk=membership.pk)
        .exists()
    ):
        raise PermissionDenied("An organization needs at least one owner.")
    membership.delete()


def invitations_purge_expired() -> int:
    cutoff = clock.now() - timedelta(seconds=settings.INVITATION_MAX_AGE)
    deleted, _ = Invitation.objects.filter(accepted_at__isnull=True, created_at__lt=cutoff).delete()
    return deleted
