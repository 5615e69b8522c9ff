from pathlib import Path

from django.http import HttpRequest, HttpResponse

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


def openapi_yaml(request: HttpRequest) -> HttpResponse:
    return HttpResponse(SPEC_PATH.read_bytes(), content_type="application/yaml")
