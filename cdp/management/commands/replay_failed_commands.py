from django.core.management.base import BaseCommand
from django.db import transaction

from cdp.inbox import wake
from cdp.models import Command as InboxCommand
from cdp.models import FailedCommand
from organizations.management.project_option import project_from_option


class Command(BaseCommand):
    help = "Put commands the processor set aside back into the inbox, once their cause is fixed."

    def add_arguments(self, parser):
        parser.add_argument("--project", help="ORG/PROJECT slugs; default: every project")

    def handle(self, *args, project: str | None, **options):
        failed = FailedCommand.objects.order_by("id")
        if project:
            target = project_from_option(project)
            failed = failed.filter(project=target)
        projects = set()
        count = 0
        for item in failed:
            with transaction.atomic():
                InboxCommand.objects.create(
                    project_id=item.project_id,
                    partition=item.partition,
                    command_id=item.command_id,
                    received_at=item.received_at,
                    message_count=item.message_count,
                    payload=item.payload,
                )
                item.delete()
            projects.add(item.project_id)
            count += 1
        for project_id in projects:
            wake(project_id)
        self.stdout.write(f"replayed {count} command(s)")
