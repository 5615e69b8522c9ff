"""The public endpoints an email links to, on the platform host, without login.

Thin: the token checks and the recording are in `emails.tracking`.
"""

import base64

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from . import tracking

# The smallest transparent GIF (1×1, 43 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def _invalid_link(request: HttpRequest, status: int = 404) -> HttpResponse:
    response = render(request, "emails/public/link_invalid.html", status=status)
    response["X-Robots-Tag"] = "noindex"
    return response


@require_GET
@never_cache
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    try:
        delivery = tracking.delivery_for_open(token)
    except tracking.BadToken:
        return HttpResponse(status=404)
    tracking.open_record(delivery=delivery)
    return HttpResponse(PIXEL_GIF, content_type="image/gif")


@require_GET
@never_cache
def click(request: HttpRequest, token: str) -> HttpResponse:
    try:
        delivery, url = tracking.click_target(token)
    except tracking.BadToken:
        return _invalid_link(request)  # never a redirect: the URL of a bad token is not ours
    tracking.click_record(delivery=delivery, url=url)
    return HttpResponseRedirect(url)


@csrf_exempt  # RFC 8058 One-Click: mail clients POST `List-Unsubscribe=One-Click` with no session
@require_http_methods(["GET", "POST"])
@never_cache
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        delivery = tracking.delivery_for_unsubscribe(token)
    except tracking.BadToken:
        return _invalid_link(request)
    context = {"project": delivery.project, "email": delivery.to_email}
    # GET only asks: link scanners fetch every URL of an email, and must not unsubscribe anyone.
    if request.method == "GET":
        response = render(request, "emails/public/unsubscribe.html", context)
    else:
        tracking.unsubscribe_record(delivery=delivery)
        if request.POST.get("List-Unsubscribe") == "One-Click":
            return HttpResponse("Unsubscribed.\n", content_type="text/plain")
        response = render(request, "emails/public/unsubscribed.html", context)
    response["X-Robots-Tag"] = "noindex"
    return response
