from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from organizations.api_keys import api_key_create
from organizations.models import ApiKey, Organization, Project, slug_validator


class Command(BaseCommand):
    help = (
        "Create an API key for a project, creating the organization and project if they do not exist. "
        "The key is printed alone on the last line of stdout."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--name", required=True, help="key name, for example 'Backend Server'")
        parser.add_argument(
            "--scope",
            choices=ApiKey.Scope.values,
            default=ApiKey.Scope.SECRET,
            help="secret (default): every endpoint; write: public, can only send calls (analytics.js)",
        )

    def handle(self, *args, org: str, project: str, name: str, scope: str, **options):
        for label, slug in (("--org", org), ("--project", project)):
            try:
                slug_validator(slug)
            except ValidationError as exc:
                raise CommandError(f"{label} {slug!r}: {exc.messages[0]}") from exc
        with transaction.atomic():
            organization, org_created = Organization.objects.get_or_create(slug=org, defaults={"name": org})
            proj, project_created = Project.objects.get_or_create(
                organization=organization, slug=project, defaults={"name": project}
            )
        if org_created:
            self.stderr.write(f"created organization {org}")
        if project_created:
            self.stderr.write(f"created project {org}/{project}")
        key, raw = api_key_create(project=proj, name=name, scope=scope)
        self.stderr.write(f"created {key.get_scope_display().lower()} {key.name} ({key.prefix}…) for {org}/{project}")
        self.stdout.write(raw)
