"""Reads of the emails app, always within one project."""

from django.db.models import Prefetch, QuerySet

from cdp.models import Customer
from organizations.models import Project
from workflows.selectors import templates_used_by

from .models import Delivery, DeliveryClick, EmailTemplate, EmailTemplateVersion


def templates_list(project: Project) -> list[EmailTemplate]:
    """The project's templates by name, each with `used_by`: the workflows (not archived) whose
    draft or running version has an email step sending it."""
    templates = list(
        EmailTemplate.objects.filter(project=project).select_related("published_version").order_by("name", "pk")
    )
    used_by = templates_used_by(project)
    for template in templates:
        template.used_by = used_by.get(template.pk, [])
    return templates


def template_get(project: Project, pk: int) -> EmailTemplate:
    """The project's template; `EmailTemplate.DoesNotExist` for another project's id."""
    return EmailTemplate.objects.select_related("published_version").get(project=project, pk=pk)


def template_versions(project: Project, template: EmailTemplate) -> QuerySet[EmailTemplateVersion]:
    """Published versions, newest first, with who published them."""
    return (
        EmailTemplateVersion.objects.filter(template__project=project, template=template)
        .select_related("published_by")
        .order_by("-number")
    )


def customer_deliveries(project: Project, customer: Customer) -> QuerySet[Delivery]:
    """The emails sent to a customer, newest first, with their template, version and clicks."""
    return (
        Delivery.objects.filter(project=project, customer=customer)
        .select_related("template", "template_version")
        .prefetch_related(Prefetch("clicks", queryset=DeliveryClick.objects.order_by("at", "pk")))
        .order_by("-created_at", "-pk")
    )
