"""The views' side of the APIs: the `read_view` decorator (key, scope, rate limit, 405, error
shape), the `limit` parameter, timestamps as answered, and the 400 that lists every problem."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from cdp.api.http import ApiError, error_response, json_response, reject_nul
from cdp.api.ingest import authenticate, rate_limit
from organizations.models import ApiKey

from .cursors import BadCursor

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def page_limit(request: HttpRequest) -> int:
    raw = request.GET.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, f"limit: must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def read_view(methods: tuple[str, ...], *, scope: str = ApiKey.Scope.SECRET):
    """A read or management endpoint: `methods` only, a key of `scope` (secret unless said
    otherwise, so every new endpoint on it is closed to public write keys), the key's rate limit
    and the error shape. No CORS (see `CorsMiddleware`). The handler gets the key's project."""

    def decorator(handler):
        @csrf_exempt
        def view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                response = error_response(405, f"{request.method} is not allowed here")
                response["Allow"] = ", ".join((*methods, "OPTIONS"))
                return response
            try:
                reject_nul(request)
                api_key = authenticate(request, scope=scope)
                rate_limit(api_key)
                return handler(request, api_key.project, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.message, retry_after=exc.retry_after)
            except BadCursor as exc:
                return error_response(400, str(exc))

        view.__name__ = handler.__name__
        return view

    return decorator


def validation_error_response(problems: list[str]) -> HttpResponse:
    """The 400 of the error shape, with every problem in `message` and one per item of `errors`."""
    return json_response(
        {"error": "bad_request", "code": "bad_request", "message": "; ".join(problems), "errors": problems},
        status=400,
    )


def no_content() -> HttpResponse:
    response = HttpResponse(status=204)
    del response["Content-Type"]  # no body, so no type
    return response


def named_fields_problems(
    body: dict, fields: tuple[str, ...], *, required: tuple[str, ...], partial: bool
) -> list[str]:
    """The problems of a create (`partial=False`) or change body's shape shared by the APIs whose
    objects have a `name` and a `description`: unknown fields, nothing to change, a required field
    missing, a name or description that is not a string PostgreSQL can store."""
    problems = [
        f"{key}: unknown field; expected one of: {', '.join(fields)}" for key in sorted(body) if key not in fields
    ]
    if partial and not any(key in body for key in fields):
        problems.append(f"body: send at least one of: {', '.join(fields)}")
    if not partial:
        problems += [f"{key}: is required" for key in required if key not in body]
    for key in ("name", "description"):
        if key in body and not isinstance(body[key], str):
            problems.append(f"{key}: must be a string")
        elif key in body and "\x00" in body[key]:
            problems.append(f"{key}: contains a NUL character")
    return problems
