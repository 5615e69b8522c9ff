import gzip
import json

import pytest
from django.core.cache import cache
from django.test import Client

from cdp.processing import commands_process
from organizations.api_keys import api_key_create
from tests.factories import ProjectFactory


class ApiClient:
    """A test client of the CDP API with a project's key, and a way to run the worker's step."""

    @classmethod
    def for_new_project(cls, key_name: str = "test"):
        """A client with the key of a new project's API key."""
        project = ProjectFactory()
        _, raw = api_key_create(project=project, name=key_name)
        return cls(project, raw)

    def __init__(self, project, raw_key: str):
        self.project = project
        self.key = raw_key
        self.client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    def post(self, path: str, body, *, content_type="application/json", gzip_body=False, **headers):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        if gzip_body:
            data = gzip.compress(data.encode() if isinstance(data, str) else data)
            headers["HTTP_CONTENT_ENCODING"] = "gzip"
        return self.client.post(path, data=data, content_type=content_type, **headers)

    def get(self, path: str, params=None):
        return self.client.get(path, params or {})

    def delete(self, path: str):
        return self.client.delete(path)

    def process(self):
        """Apply every pending command of the project, as a worker would."""
        results = []
        while True:
            result = commands_process(project_id=self.project.pk)
            if not result.commands:
                return results
            results.append(result)


@pytest.fixture(autouse=True)
def _api_urls(settings):
    settings.ROOT_URLCONF = "timonier.urls_api"
    settings.MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "cdp.api.http.CorsMiddleware"]
    cache.clear()


@pytest.fixture
def api(db) -> ApiClient:
    return ApiClient.for_new_project("test")


@pytest.fixture
def other_api(db) -> ApiClient:
    return ApiClient.for_new_project("other")
