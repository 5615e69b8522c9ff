"""The `--project ORG/PROJECT` option that management commands share."""

from django.core.management.base import CommandError

from organizations.models import Project


def project_from_option(value: str) -> Project:
    """The project named `ORG/PROJECT` by slugs, or a CommandError that says how to name one."""
    org_slug, _, project_slug = value.partition("/")
    project = Project.objects.filter(organization__slug=org_slug, slug=project_slug).first()
    if project is None:
        raise CommandError(f"--project {value!r}: no such project (use ORG/PROJECT slugs)")
    return project
