"""Writes of the emails app: templates, publishing, previews and sends."""

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Max

from accounts.models import User
from cdp.models import Customer
from organizations.models import Project
from timonier import clock

from . import personalisation, sender_policy
from .compiling import MjmlError, compile_mjml, html_to_text
from .deliveries import Send, deliver_many
from .models import CONTENT_FIELDS, UTM_FIELDS, Delivery, EmailTemplate, EmailTemplateVersion
from .rendering import RenderedEmail, RenderError, render_preview
from .tasks import deliver_task

NAME_MAX = EmailTemplate._meta.get_field("name").max_length
SETTINGS_LIMITS = {
    "subject": EmailTemplate._meta.get_field("subject").max_length,
    "preheader": EmailTemplate._meta.get_field("preheader").max_length,
    "from_name": EmailTemplate._meta.get_field("from_name").max_length,
    "from_email": 254,
    "reply_to": 254,
    **{name: EmailTemplate._meta.get_field(name).max_length for name in UTM_FIELDS},
}


# --- Templates ---------------------------------------------------------------------------------


def template_create(*, project: Project, name: str, user: User | None) -> EmailTemplate:
    """A draft template; its subject starts as its name (the guide publishes without setting one)."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["Enter a name."]})
    if len(name) > NAME_MAX:
        raise ValidationError({"name": [f"Use at most {NAME_MAX} characters."]})
    duplicate = ValidationError({"name": ["A template with this name already exists in this project."]})
    if EmailTemplate.objects.filter(project=project, name=name).exists():
        raise duplicate
    try:
        with transaction.atomic():
            return EmailTemplate.objects.create(project=project, name=name, subject=name, created_by=user)
    except IntegrityError:  # created concurrently under the same name
        raise duplicate from None


def template_update_settings(
    *,
    template: EmailTemplate,
    subject: str,
    preheader: str,
    from_name: str,
    from_email: str,
    reply_to: str,
    utm_source: str,
    utm_medium: str,
    utm_campaign: str,
    utm_content: str,
    track_opens: bool,
    track_clicks: bool,
) -> EmailTemplate:
    """Validate every field, then save them all or none (errors are keyed by field)."""
    values = {
        "subject": subject,
        "preheader": preheader,
        "from_name": from_name,
        "from_email": from_email,
        "reply_to": reply_to,
        "utm_source": utm_source,
        "utm_medium": utm_medium,
        "utm_campaign": utm_campaign,
        "utm_content": utm_content,
    }
    values = {name: (value or "").strip() for name, value in values.items()}
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        if len(value) > SETTINGS_LIMITS[name]:
            errors.setdefault(name, []).append(f"Use at most {SETTINGS_LIMITS[name]} characters.")
        if "\n" in value or "\r" in value:
            errors.setdefault(name, []).append("Must be on one line.")
    for name in ("from_email", "reply_to"):
        if values[name] and name not in errors:
            try:
                validate_email(values[name])
            except ValidationError:
                errors.setdefault(name, []).append("Enter a valid email address.")
    if "from_email" not in errors and (
        problem := sender_policy.from_address_problem(project=template.project, address=values["from_email"])
    ):
        errors["from_email"] = [problem]
    for name in ("subject", "preheader"):
        if name not in errors and (problem := personalisation.check(values[name], html=False)):
            errors.setdefault(name, []).append(f"Liquid error on {problem}")
    if errors:
        raise ValidationError(errors)

    values["track_opens"] = bool(track_opens)
    values["track_clicks"] = bool(track_clicks)
    changed = [name for name, value in values.items() if getattr(template, name) != value]
    if not changed:
        return template
    for name in changed:
        setattr(template, name, values[name])
    template.has_unpublished_changes = True
    template.updated_at = clock.now()
    template.save(update_fields=[*changed, "has_unpublished_changes", "updated_at"])
    return template


def _design_problems(mjml: str) -> list[str]:
    """Liquid and MJML problems of a body, each with its line when known."""
    problems = []
    if problem := personalisation.check(mjml, html=True):
        problems.append(f"Liquid error on {problem}")
    try:
        # Compiled as written (Liquid markup is text to MJML), so lines match the source.
        compile_mjml(mjml)
    except MjmlError as exc:
        problems.append(exc.problem)
    return problems


def template_save_design(*, template: EmailTemplate, design: dict, mjml: str) -> list[str]:
    """Store the designer's project data and MJML, whatever their problems, and return those problems."""
    if not isinstance(design, dict):
        raise ValidationError({"design": ["Must be a JSON object (the designer's project data)."]})
    if not isinstance(mjml, str):
        raise ValidationError({"mjml": ["Must be text."]})
    template.design = design
    template.mjml = mjml
    template.has_unpublished_changes = True
    template.updated_at = clock.now()
    template.save(update_fields=["design", "mjml", "has_unpublished_changes", "updated_at"])
    return _design_problems(mjml)


def _publish_problems(template: EmailTemplate) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    # The project's sending domains may have changed since the From address was saved.
    if problem := sender_policy.from_address_problem(project=template.project, address=template.from_email):
        errors["from_email"] = [problem]
    if not template.subject.strip():
        errors["subject"] = ["A subject is required to publish."]
    for name in ("subject", "preheader"):
        if problem := personalisation.check(getattr(template, name), html=False):
            errors.setdefault(name, []).append(f"Liquid error on {problem}")
    if problems := _design_problems(template.mjml):
        errors["mjml"] = problems
    return errors


def template_publish(*, template: EmailTemplate, user: User | None) -> EmailTemplateVersion:
    """Freeze the draft into a new version (v1, v2, …) with its compiled HTML and text."""
    with transaction.atomic():
        template = EmailTemplate.objects.select_for_update().get(pk=template.pk)
        if errors := _publish_problems(template):
            raise ValidationError(errors)
        html = compile_mjml(template.mjml, preheader=template.preheader)
        number = (template.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = EmailTemplateVersion.objects.create(
            template=template,
            number=number,
            **{name: getattr(template, name) for name in CONTENT_FIELDS},
            html=html,
            text=html_to_text(html),
            published_by=user,
            published_at=clock.now(),
        )
        template.published_version = version
        template.has_unpublished_changes = False
        template.save(update_fields=["published_version", "has_unpublished_changes"])
    return version


# --- Rendering and sending ---------------------------------------------------------------------


def render_email(
    *, source: EmailTemplate | EmailTemplateVersion, customer: Customer | None, event: dict | None = None
) -> RenderedEmail:
    """A preview for `customer` (sample data when None); ValidationError keyed by field on errors."""
    project_id = source.project_id if isinstance(source, EmailTemplate) else source.template.project_id
    if customer is not None and customer.project_id != project_id:
        raise ValidationError({"customer": ["No such customer in this project."]})
    try:
        return render_preview(source=source, customer=customer, event=event)
    except RenderError as exc:
        raise ValidationError({exc.field: [exc.message]}) from exc


def _enqueue(delivery: Delivery) -> None:
    transaction.on_commit(lambda: deliver_task.delay(delivery.pk))


def send_test(
    *, template: EmailTemplate, to_email: str, user: User | None, customer: Customer | None = None
) -> Delivery:
    """Send the current draft to `to_email`, rendered for `customer` or sample data, tracked like a real send."""
    to_email = (to_email or "").strip()
    try:
        validate_email(to_email)
    except ValidationError:
        raise ValidationError({"to_email": ["Enter a valid email address."]}) from None
    if customer is not None and customer.project_id != template.project_id:
        raise ValidationError({"customer": ["No such customer in this project."]})
    if problem := sender_policy.recipient_problem(project=template.project, address=to_email):
        raise ValidationError({"to_email": [problem]})
    if problem := sender_policy.from_address_problem(project=template.project, address=template.from_email):
        raise ValidationError({"from_email": [problem]})
    render_email(source=template, customer=customer)  # report errors now, not as a failed delivery
    # Counted last: a refused send does not use up the sender's allowance.
    if user is not None and (problem := sender_policy.take_test_send(user=user)):
        raise ValidationError({"to_email": [problem]})
    delivery = Delivery.objects.create(
        project_id=template.project_id,
        template=template,
        template_version=None,
        customer=customer,
        to_email=to_email,
        kind=Delivery.Kind.TEST,
        status=Delivery.Status.QUEUED,
    )
    _enqueue(delivery)
    return delivery


def deliver(
    *,
    version: EmailTemplateVersion,
    customer: Customer,
    event: dict | None = None,
    workflow_step: str = "",
    idempotency_key: str = "",
) -> Delivery:
    """Send `version` (exactly that one, even if the template was published again) to `customer`.

    A customer without an email address, or who unsubscribed, gets a Delivery with status
    failed and the reason, so the workflow's history shows why nothing was sent.
    `idempotency_key` (unique per project): called again with the same key, this returns the
    Delivery made the first time and sends nothing. Many at once: `deliveries.deliver_many`.
    """
    (delivery,) = deliver_many(
        [Send(version, customer, event=event, workflow_step=workflow_step, idempotency_key=idempotency_key)]
    )
    return delivery
