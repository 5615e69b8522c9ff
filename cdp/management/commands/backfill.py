import os
import sys
import time

import orjson
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from cdp import inbox, processing
from cdp.messages import SHORT_TYPES, MessageError, normalize
from organizations.management.project_option import project_from_option
from organizations.models import Project
from timonier import clock

CHUNK = 500


class Command(BaseCommand):
    help = (
        "Import a JSONL file of Segment-format calls (one JSON object per line, each with its `type`) "
        "through the API's validation and the ingest pipeline. PATH may be - for stdin."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="JSONL file, or - for standard input")
        parser.add_argument("--project", required=True, help="ORG/PROJECT slugs, e.g. acme-corp/my-app")
        parser.add_argument(
            "--process", action="store_true", help="apply the calls in this process instead of leaving them to workers"
        )
        parser.add_argument("--max-errors-shown", type=int, default=50, help="rejected lines listed in the summary")

    def handle(self, *args, path: str, project: str, process: bool, max_errors_shown: int, **options):
        target = project_from_option(project)
        try:
            stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from exc

        accepted = 0
        rejected: list[tuple[int, str]] = []
        chunk: list[dict] = []
        started = time.monotonic()
        total = None if path == "-" else _size(stream)
        with stream, tqdm(total=total, unit="B", unit_scale=True, file=self.stderr._out, disable=None) as bar:
            for number, line in enumerate(stream, start=1):
                bar.update(len(line))
                if not line.strip():
                    continue
                try:
                    message = _parse(line)
                except MessageError as exc:
                    rejected.append((number, str(exc)))
                    continue
                chunk.append(message)
                if len(chunk) >= CHUNK:
                    accepted += self._enqueue(target, chunk)
                    chunk = []
            if chunk:
                accepted += self._enqueue(target, chunk)

        if process:
            while (result := processing.commands_process(project_id=target.pk)) is None or result.commands:
                pass
        elapsed = max(time.monotonic() - started, 1e-6)
        self.stdout.write(
            f"accepted {accepted}, rejected {len(rejected)} in {elapsed:.1f} s ({accepted / elapsed:,.0f} calls/s)"
        )
        for number, reason in rejected[:max_errors_shown]:
            self.stdout.write(f"  line {number}: {reason}")
        if len(rejected) > max_errors_shown:
            self.stdout.write(f"  … and {len(rejected) - max_errors_shown} more")

    def _enqueue(self, project: Project, messages: list[dict]) -> int:
        inbox.commands_enqueue(project_id=project.pk, messages=messages, received_at=clock.now())
        return len(messages)


def _parse(line: bytes) -> dict:
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"not valid JSON ({exc})") from None
    if isinstance(raw, dict) and raw.get("type") in SHORT_TYPES:
        raw["type"] = SHORT_TYPES[raw["type"]]
    if not isinstance(raw, dict) or not raw.get("type"):
        raise MessageError("type: is required")
    return normalize(raw, received_at=clock.now())


def _size(stream) -> int | None:
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError):
        return None
