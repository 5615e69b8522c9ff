"""`manage.py rebuild_segments`: every segment, one project's or one, with a summary."""

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from segments.models import Membership, Segment
from segments.services import segment_create
from tests.factories import ProjectFactory

from .conditions_support import store_customer

pytestmark = pytest.mark.django_db

PRO_USERS = {"type": "trait", "name": "plan", "op": "equals", "value": "pro"}
FREE_USERS = {"type": "trait", "name": "plan", "op": "equals", "value": "free"}


def rebuild(*args) -> str:
    out = StringIO()
    call_command("rebuild_segments", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def segments():
    project, other = ProjectFactory(), ProjectFactory()
    for plan in ("pro", "pro", "free"):
        store_customer(project, {"plan": plan})
    store_customer(other, {"plan": "pro"})
    return (
        segment_create(project=project, name="Pro Users", condition=PRO_USERS),
        segment_create(project=project, name="Free Users", condition=FREE_USERS),
        segment_create(project=other, name="Their Pros", condition=PRO_USERS),
    )


def test_rebuild_every_segment_prints_each_and_a_summary(segments):
    pro, free, theirs = segments

    output = rebuild()

    assert f"#{pro.pk} Pro Users: 2 entries, 0 exits" in output
    assert f"#{free.pk} Free Users: 1 entries, 0 exits" in output
    assert re.search(r"^3 segments: 4 entries, 0 exits in \d+\.\d s$", output, re.MULTILINE)
    assert set(Segment.objects.values_list("status", flat=True)) == {Segment.Status.READY}
    assert Membership.objects.count() == 4


def test_rebuild_one_project(segments):
    pro, _, theirs = segments
    project = pro.project

    output = rebuild("--project", f"{project.organization.slug}/{project.slug}")

    assert re.search(r"^2 segments: 3 entries, 0 exits", output, re.MULTILINE)
    assert not Membership.objects.filter(segment=theirs).exists()


def test_rebuild_one_segment_twice_finds_nothing_new(segments):
    pro, _, _ = segments
    rebuild("--segment", str(pro.pk))

    output = rebuild("--segment", str(pro.pk))

    assert re.search(r"^1 segments: 0 entries, 0 exits", output, re.MULTILINE)


def test_unknown_project_or_segment_is_an_error(segments):
    with pytest.raises(CommandError, match="no such project"):
        rebuild("--project", "nope/nothing")
    with pytest.raises(CommandError, match="no such segment"):
        rebuild("--segment", "999999")
