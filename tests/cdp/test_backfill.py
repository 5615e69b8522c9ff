import io
import json
import sys

import pytest
from django.core.management import CommandError, call_command

from cdp.models import Customer, Event
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def test_backfill_imports_good_lines_and_reports_bad_ones_with_line_numbers(tmp_path):
    project = ProjectFactory()
    lines = [
        json.dumps(
            {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "timestamp": "2025-01-01T00:00:00Z"}
        ),
        "{broken",
        json.dumps({"type": "track", "userId": "u1", "event": "purchase", "timestamp": "2025-01-02T00:00:00Z"}),
        json.dumps({"type": "track", "userId": "x" * 300, "event": "purchase"}),
        "",
        json.dumps({"userId": "u2", "event": "no type"}),
        json.dumps({"type": "t", "userId": "u2", "event": "short type"}),
    ]
    path = tmp_path / "calls.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    call_command(
        "backfill", str(path), "--project", f"{project.organization.slug}/{project.slug}", "--process", stdout=out
    )
    report = out.getvalue()
    assert "accepted 3, rejected 3" in report
    assert "line 2: not valid JSON" in report
    assert "line 4: customer_id: exceeds maximum length of 255 characters" in report
    assert "line 6: type: is required" in report
    assert Customer.objects.get(external_id="u1").traits == {"plan": "pro"}
    assert Event.objects.filter(project=project, type="track").count() == 2
    assert Event.objects.get(name="purchase").timestamp.year == 2025


def test_backfill_reads_stdin(monkeypatch):
    project = ProjectFactory()
    data = json.dumps({"type": "track", "userId": "u", "event": "e"}).encode() + b"\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    out = io.StringIO()
    call_command("backfill", "-", "--project", f"{project.organization.slug}/{project.slug}", "--process", stdout=out)
    assert "accepted 1, rejected 0" in out.getvalue()
    assert Event.objects.filter(project=project).count() == 1


def test_backfill_needs_an_existing_project(tmp_path):
    with pytest.raises(CommandError, match="no such project"):
        call_command("backfill", str(tmp_path / "x.jsonl"), "--project", "nope/nope")
