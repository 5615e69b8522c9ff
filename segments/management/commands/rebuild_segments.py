import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from organizations.management.project_option import project_from_option
from segments.membership import dependency_order, membership_rebuild
from segments.models import MembershipChange, Segment


class Command(BaseCommand):
    help = (
        "Recompute segment membership set-wise in SQL, recording entries and exits. "
        "Safe to run while ingest continues: it only reads customers and events."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", help="ORG/PROJECT slugs, e.g. acme-corp/my-app (default: every project)")
        parser.add_argument("--segment", type=int, help="the id of one segment")

    def handle(self, *args, project: str | None, segment: int | None, **options):
        segments = Segment.objects.select_related("project__organization").order_by("project_id", "pk")
        if project:
            target = project_from_option(project)
            segments = segments.filter(project=target)
        if segment is not None:
            segments = segments.filter(pk=segment)
            if not segments.exists():
                raise CommandError(f"--segment {segment}: no such segment" + (f" in {project}" if project else ""))

        started = time.monotonic()
        total_entries = total_exits = 0
        # A segment is rebuilt after the segments its condition uses.
        selected = dependency_order(list(segments))
        with tqdm(selected, unit="segment", file=self.stderr._out, disable=None) as bar:
            for each in bar:
                bar.set_description(each.name[:30])
                segment_started = time.monotonic()
                entries, exits = membership_rebuild(each, cause=MembershipChange.Cause.RECONCILE)
                total_entries += entries
                total_exits += exits
                where = f"{each.project.organization.slug}/{each.project.slug}"
                bar.write(
                    f"{where} #{each.pk} {each.name}: {entries} entries, {exits} exits "
                    f"in {time.monotonic() - segment_started:.2f} s",
                    file=self.stdout._out,
                )
        elapsed = time.monotonic() - started
        self.stdout.write(f"{len(selected)} segments: {total_entries} entries, {total_exits} exits in {elapsed:.1f} s")
