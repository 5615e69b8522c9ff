"""The bare endpoint: read the body, parse it with orjson, answer 202 `{}`; no other work."""

import orjson
from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def parsed(request):
    body = request.body
    if body:
        orjson.loads(body)
    return HttpResponse(b"{}", status=202, content_type="application/json")


urlpatterns = [
    path("health", parsed),
    path("v1/track", parsed),
    path("v1/batch", parsed),
]
