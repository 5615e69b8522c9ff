"""The Segments API of the CDP API service (:3030): list, create, read, change and delete a
project's segments, and page through their members.

Plain Django views on the shared API plumbing (`timonier.api`): the key's project, the rate limit, the
405 answer and the error shape come from `read_view`. Writes go through `segments.services` only,
which validate the condition and schedule the background build.
"""

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpRequest, HttpResponse

from cdp.api.http import ApiError, json_response, read_json_body
from cdp.api.ingest import SINGLE_BODY_LIMIT
from cdp.selectors import first_anonymous_ids
from timonier.api.cursors import MAX_ID, decode_name_cursor, encode_cursor
from timonier.api.views import iso, named_fields_problems, no_content, page_limit, read_view, validation_error_response

from . import selectors, services
from .conditions import validate
from .models import Segment

FIELDS = ("name", "description", "condition")


def segment_json(segment: Segment) -> dict:
    return {
        "id": segment.pk,
        "name": segment.name,
        "description": segment.description,
        "condition": segment.condition,
        "status": segment.status,
        "member_count": segment.member_count,
        "last_computed_at": iso(segment.last_computed_at),
        "created_at": iso(segment.created_at),
        "updated_at": iso(segment.updated_at),
    }


@read_view(("GET", "POST"))
def segments(request: HttpRequest, project) -> HttpResponse:
    if request.method == "POST":
        return _segment_create(request, project)
    unknown = sorted(set(request.GET) - {"limit", "cursor"})
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown parameter; expected limit or cursor")
    rows, next_cursor = _segments_page(project, limit=page_limit(request), cursor=request.GET.get("cursor"))
    return json_response({"segments": [segment_json(s) for s in rows], "next_cursor": next_cursor})


def _segment_create(request: HttpRequest, project) -> HttpResponse:
    fields, problems = _read_fields(request, partial=False)
    if problems:
        return validation_error_response(problems)
    try:
        segment = services.segment_create(project=project, **fields)
    except ValidationError as exc:
        return validation_error_response(_problems(exc))
    return json_response(segment_json(segment), status=201, headers={"Location": f"/v1/segments/{segment.pk}"})


@read_view(("GET", "PATCH", "DELETE"))
def segment_detail(request: HttpRequest, project, segment_id: str) -> HttpResponse:
    segment = _segment_or_404(project, segment_id)
    if request.method == "GET":
        return json_response(segment_json(segment))
    if request.method == "DELETE":
        try:
            services.segment_delete(segment=segment)
        except ValidationError as exc:
            raise ApiError(409, f"segment_id: {' '.join(exc.messages)}") from None
        return no_content()
    fields, problems = _read_fields(request, partial=True)
    if problems:
        return validation_error_response(problems)
    try:
        segment = services.segment_update(segment=segment, **fields)
    except ValidationError as exc:
        return validation_error_response(_problems(exc))
    except Segment.DoesNotExist:  # deleted by another request meanwhile
        raise ApiError(404, f"segment_id: no segment {segment_id} in this project") from None
    return json_response(segment_json(segment))


@read_view(("GET",))
def segment_members(request: HttpRequest, project, segment_id: str) -> HttpResponse:
    segment = _segment_or_404(project, segment_id)
    unknown = sorted(set(request.GET) - {"limit", "cursor"})
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown parameter; expected limit or cursor")
    rows, next_cursor = selectors.segment_members_page(
        project, segment, limit=page_limit(request), cursor=request.GET.get("cursor")
    )
    anonymous_ids = first_anonymous_ids(project, [row.customer_id for row in rows if not row.customer.external_id])
    members = [
        {
            "customer_id": row.customer.external_id,
            "anonymous_id": anonymous_ids.get(row.customer_id),
            "entered_at": iso(row.entered_at),
        }
        for row in rows
    ]
    return json_response({"members": members, "next_cursor": next_cursor})


# --- Reading requests ---------------------------------------------------------------------------


def _segment_or_404(project, segment_id: str) -> Segment:
    if segment_id.isascii() and segment_id.isdigit() and 1 <= int(segment_id) <= MAX_ID:
        try:
            return selectors.segment_get(project, int(segment_id))
        except Segment.DoesNotExist:
            pass
    raise ApiError(404, f"segment_id: no segment {segment_id} in this project")


def _read_fields(request: HttpRequest, *, partial: bool) -> tuple[dict, list[str]]:
    """The fields of a create (`partial=False`) or change request, and every problem of their
    shape; the condition's own problems are listed with them so one answer names them all."""
    body = read_json_body(request, limit=SINGLE_BODY_LIMIT)
    if not isinstance(body, dict):
        raise ApiError(400, "body: must be a JSON object with name, description and condition")
    problems = named_fields_problems(body, FIELDS, required=("name", "condition"), partial=partial)
    if "condition" in body:
        if not isinstance(body["condition"], dict):
            problems.append("condition: must be an object")
        elif _has_nul(body["condition"]):
            problems.append("condition: contains a NUL character")
        elif problems:
            problems += _condition_problems(validate(body["condition"]))
    fields = {key: body[key] for key in FIELDS if key in body}
    return fields, problems


def _has_nul(value) -> bool:
    """Whether a JSON value holds a NUL character anywhere (PostgreSQL's jsonb cannot store one)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    return False


def _condition_problems(messages: list[str]) -> list[str]:
    """The condition's problems with their paths from the body: `op: …` becomes `condition.op: …`
    and the whole condition (`$: …`) `condition: …`."""
    return [f"condition{message[1:]}" if message.startswith("$") else f"condition.{message}" for message in messages]


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for key, messages in exc.message_dict.items():
        if key == "condition":
            problems += _condition_problems(messages)
        else:
            problems += [f"{key}: {message}" for message in messages]
    return problems


# --- Queries (scoped by the project) ------------------------------------------------------------


def _segments_page(project, *, limit: int, cursor: str | None) -> tuple[list[Segment], str | None]:
    """The project's segments by name then id, keyset-paginated on (name, id)."""
    query = selectors.segments_list(project)
    if cursor:
        name, last_id = decode_name_cursor(cursor)
        query = query.filter(Q(name__gt=name) | Q(name=name, pk__gt=last_id))
    rows = list(query[: limit + 1])
    next_cursor = encode_cursor(rows[limit - 1].name, rows[limit - 1].pk) if len(rows) > limit else None
    return rows[:limit], next_cursor
