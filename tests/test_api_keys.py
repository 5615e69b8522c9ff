import hashlib
import io
import re

import pytest
from django.core.cache import cache
from django.core.management import call_command

from organizations.api_keys import api_key_authenticate, api_key_create, api_key_revoke
from organizations.models import ApiKey, Organization, Project

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


def _base(personas) -> str:
    return f"/o/{personas.organization.slug}/{personas.project.slug}/"


def test_new_key_is_shown_once_and_only_its_hash_is_stored(personas):
    client = personas.client("admin")
    response = client.post(_base(personas) + "api-keys/new", {"name": "Backend Server"})
    created_url = response["Location"]
    html = client.get(created_url).content.decode()
    raw = re.search(r'value="(tk_[A-Za-z0-9]{40})"', html).group(1)
    assert "You will not be able to see it again" in html

    key = ApiKey.objects.get(project=personas.project)
    assert key.name == "Backend Server"
    assert key.prefix == raw[:11]
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in str(ApiKey.objects.values().get())

    assert raw not in client.get(created_url, follow=True).content.decode()  # not shown again
    listing = client.get(_base(personas) + "api-keys").content.decode()
    assert "Backend Server" in listing and key.prefix in listing and raw not in listing


def test_key_name_is_required(personas):
    response = personas.client("admin").post(_base(personas) + "api-keys/new", {"name": ""})
    assert "This field is required." in response.content.decode()
    assert not ApiKey.objects.exists()


def test_member_cannot_create_or_revoke_keys(personas):
    key, _ = api_key_create(project=personas.project, name="k")
    client = personas.client("member")
    assert client.post(_base(personas) + "api-keys/new", {"name": "x"}).status_code == 403
    assert client.post(_base(personas) + f"api-keys/{key.pk}/revoke").status_code == 403
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_authenticate_resolves_the_project_and_records_last_use(personas):
    key, raw = api_key_create(project=personas.project, name="k")
    found = api_key_authenticate(raw)
    assert found.pk == key.pk and found.project == personas.project
    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None


@pytest.mark.parametrize(
    "mutate", [lambda r: r[:-1] + ("A" if r[-1] != "A" else "B"), lambda r: r + "x", lambda r: "", lambda r: "tk_"]
)
def test_authenticate_refuses_wrong_keys(personas, mutate):
    _, raw = api_key_create(project=personas.project, name="k")
    assert api_key_authenticate(mutate(raw)) is None


def test_revoked_key_is_refused_from_then_on_even_when_cached(personas):
    key, raw = api_key_create(project=personas.project, name="k")
    assert api_key_authenticate(raw) is not None  # now cached
    personas.client("admin").post(_base(personas) + f"api-keys/{key.pk}/revoke")
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert api_key_authenticate(raw) is None
    listing = personas.client("admin").get(_base(personas) + "api-keys").content.decode()
    assert "revoked" in listing


def test_revoking_another_projects_key_is_404(personas):
    key, raw = api_key_create(project=personas.other_project, name="theirs")
    response = personas.client("admin").post(_base(personas) + f"api-keys/{key.pk}/revoke")
    assert response.status_code == 404
    assert api_key_authenticate(raw) is not None


def test_created_page_of_another_projects_key_is_404(personas):
    key, _ = api_key_create(project=personas.other_project, name="theirs")
    assert personas.client("admin").get(_base(personas) + f"api-keys/{key.pk}/created").status_code == 404


def test_revoke_is_idempotent(personas):
    key, _ = api_key_create(project=personas.project, name="k")
    api_key_revoke(api_key=key)
    first = ApiKey.objects.get(pk=key.pk).revoked_at
    api_key_revoke(api_key=key)
    assert ApiKey.objects.get(pk=key.pk).revoked_at == first


def test_create_api_key_command_creates_org_and_project_and_prints_the_key_last():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "--org", "acme-corp", "--project", "my-app", "--name", "CI", stdout=out, stderr=err)
    raw = out.getvalue().strip().splitlines()[-1]
    assert re.fullmatch(r"tk_[A-Za-z0-9]{40}", raw)
    project = Project.objects.get(organization__slug="acme-corp", slug="my-app")
    assert api_key_authenticate(raw).project == project

    call_command("create_api_key", "--org", "acme-corp", "--project", "my-app", "--name", "CI 2", stdout=io.StringIO())
    assert Organization.objects.count() == 1 and Project.objects.count() == 1
    assert ApiKey.objects.filter(project=project).count() == 2


def test_create_api_key_command_rejects_bad_slugs():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="--org 'Acme Corp'"):
        call_command("create_api_key", "--org", "Acme Corp", "--project", "my-app", "--name", "CI")
    assert not Organization.objects.exists()
