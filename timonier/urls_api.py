"""URL root of the CDP API (:3030). It serves no UI."""

from django.http import JsonResponse
from django.urls import include, path


def health(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("health", health, name="health"),
    path("", include("cdp.api.urls")),
]
