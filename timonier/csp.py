"""The platform's Content-Security-Policy: one header on every response, from settings.

A small middleware rather than django-csp: the policy is one constant string with no nonces (no
template has inline script), and a view that needs another policy (the email designer, the
sandboxed email preview) sets its own header, which this middleware then leaves alone.
"""

from django.conf import settings

HEADER = "Content-Security-Policy"


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # Django's debug error pages (DEBUG only) are all inline style and script.
        debug_page = settings.DEBUG and response.status_code >= 400
        if HEADER not in response and not debug_page:
            response[HEADER] = settings.CONTENT_SECURITY_POLICY
        return response
