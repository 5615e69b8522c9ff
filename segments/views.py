"""Platform pages of segments: list, new, detail with members and chart, edit, delete, preview."""

from django.contrib import messages
from django.core.exceptions import BadRequest, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from organizations.scoping import project_view
from timonier import clock
from timonier.api.cursors import BadCursor

from . import selectors, services
from .conditions import grammar, referenced_segments
from .describe import describe
from .forms import SegmentForm, condition_text, parse_condition
from .models import Segment

MEMBERS_PER_PAGE = 50
# While a segment is building, its page reloads itself this often (seconds): no JavaScript needed.
BUILDING_REFRESH_SECONDS = 2


def _segment(request: HttpRequest, pk: int) -> Segment:
    try:
        return selectors.segment_get(request.project, pk)
    except Segment.DoesNotExist:
        raise Http404("No such segment in this project") from None


def _apply_errors(form: SegmentForm, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        for error in errors:
            form.add_error(field if field in form.fields else None, error)


def _builder_config(request: HttpRequest, exclude: Segment | None = None) -> dict:
    """What the visual builder needs: the grammar's vocabulary and the segments it may pick."""
    segments = selectors.segments_list(request.project)
    if exclude is not None:
        segments = segments.exclude(pk=exclude.pk)
    return {
        "operators": list(grammar.OPERATORS),
        "presence_operators": list(grammar.PRESENCE_OPERATORS),
        "list_operators": list(grammar.LIST_OPERATORS),
        "count_operators": list(grammar.COUNT_OPERATORS),
        "units": list(grammar.WINDOW_UNITS),
        "segments": [{"id": pk, "name": name} for pk, name in segments.values_list("pk", "name")],
    }


def _segment_url(request: HttpRequest, segment: Segment):
    return redirect("segments:segment", request.organization.slug, request.project.slug, segment.pk)


@project_view()
def segment_list(request: HttpRequest) -> HttpResponse:
    return render(request, "segments/segment_list.html", {"segments": selectors.segments_list(request.project)})


@project_view()
def segment_new(request: HttpRequest) -> HttpResponse:
    form = SegmentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            segment = services.segment_create(project=request.project, **form.cleaned_data)
        except ValidationError as exc:
            _apply_errors(form, exc)
        else:
            messages.success(request, f"Segment {segment.name} created: its members are being computed.")
            return _segment_url(request, segment)
    context = {"form": form, "builder": _builder_config(request)}
    return render(request, "segments/segment_form.html", context)


@project_view()
def segment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    segment = _segment(request, pk)
    initial = {"name": segment.name, "description": segment.description, "condition": condition_text(segment.condition)}
    form = SegmentForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.segment_update(segment=segment, **form.cleaned_data)
        except ValidationError as exc:
            _apply_errors(form, exc)
        else:
            messages.success(request, f"Segment {segment.name} saved.")
            return _segment_url(request, segment)
    context = {"form": form, "segment": segment, "builder": _builder_config(request, exclude=segment)}
    return render(request, "segments/segment_form.html", context)


@project_view()
def segment_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation (so it works without JavaScript), POST deletes."""
    segment = _segment(request, pk)
    if request.method == "POST":
        try:
            services.segment_delete(segment=segment)
        except ValidationError as exc:
            for message in exc.messages:
                messages.error(request, message)
            return _segment_url(request, segment)
        messages.success(request, f"Segment {segment.name} deleted.")
        return redirect("segments:segments", request.organization.slug, request.project.slug)
    return render(request, "segments/segment_delete.html", {"segment": segment})


@project_view()
def segment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    segment = _segment(request, pk)
    cursor = request.GET.get("cursor") or None
    try:
        members, next_cursor = selectors.segment_members_page(
            request.project, segment, limit=MEMBERS_PER_PAGE, cursor=cursor
        )
    except BadCursor as exc:
        raise BadRequest(str(exc)) from None
    used = referenced_segments(segment.condition)
    names = dict(selectors.segments_list(request.project).filter(pk__in=used).values_list("pk", "name"))
    context = {
        "segment": segment,
        "building": segment.status == Segment.Status.BUILDING,
        "refresh_seconds": BUILDING_REFRESH_SECONDS,
        "description": describe(segment.condition, segment_names=names),
        "condition_json": condition_text(segment.condition),
        "members": members,
        "cursor": cursor,
        "next_cursor": next_cursor,
        "per_day": selectors.segment_members_per_day(request.project, segment, now=clock.now()),
    }
    return render(request, "segments/segment_detail.html", context)


@require_POST
@project_view()
def segment_preview(request: HttpRequest) -> HttpResponse:
    """How many customers the posted `condition` (JSON text) matches now: `{"count": N}`, or
    `{"errors": ["path: message", …]}` with status 400."""
    try:
        condition = parse_condition(request.POST.get("condition", ""))
    except ValidationError as exc:
        return JsonResponse({"errors": exc.messages}, status=400)
    count, errors = selectors.segment_preview_count(request.project, condition, now=clock.now())
    if errors:
        return JsonResponse({"errors": errors}, status=400)
    return JsonResponse({"count": count})
