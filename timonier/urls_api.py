"""URL root of the CDP API (:3030). It serves no UI."""

from django.http import JsonResponse
from django.urls import include, path

from cdp.api.http import error_response


def health(request):
    return JsonResponse({"status": "ok"})


def not_found(request, exception=None):
    """A path that matches no endpoint: the API's error shape, not Django's HTML page."""
    return error_response(404, f"{request.path}: no such endpoint")


def server_error(request):
    return error_response(500, "internal error; it was logged, retry later")


handler404 = not_found
handler500 = server_error


urlpatterns = [
    path("health", health, name="health"),
    path("", include("cdp.api.urls")),
    path("", include("segments.api_urls")),
    path("", include("workflows.api_urls")),
]
