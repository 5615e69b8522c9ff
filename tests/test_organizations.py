import re
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.test import Client

from organizations.models import Invitation, Membership, Organization, Project, Role

from .conftest import signed_in_client
from .factories import UserFactory

pytestmark = pytest.mark.django_db


def test_create_organization_makes_the_creator_owner(user):
    client = signed_in_client(user)
    response = client.post("/organizations/new", {"name": "Acme Corp", "slug": "acme-corp"})
    assert response["Location"] == "/"
    organization = Organization.objects.get(slug="acme-corp")
    assert Membership.objects.get(organization=organization, user=user).role == Role.OWNER
    assert "Acme Corp" in client.get("/").content.decode()


@pytest.mark.parametrize("slug", ["Acme", "acme corp", "acme_corp", "-acme", "acme-", "-", "é"])
def test_organization_slug_must_be_lowercase_letters_numbers_hyphens(user, slug):
    response = signed_in_client(user).post("/organizations/new", {"name": "Acme", "slug": slug})
    assert response.status_code == 200
    assert "Use lowercase letters, numbers and hyphens" in response.content.decode()
    assert not Organization.objects.exists()


def test_organization_slug_is_unique(user):
    client = signed_in_client(user)
    client.post("/organizations/new", {"name": "Acme", "slug": "acme"})
    response = client.post("/organizations/new", {"name": "Acme 2", "slug": "acme"})
    assert "This slug is already taken" in response.content.decode()
    assert Organization.objects.count() == 1


def test_create_project_redirects_to_its_dashboard(personas):
    client = personas.client("owner")
    org = personas.organization.slug
    response = client.post(f"/o/{org}/-/new-project", {"name": "My App", "slug": "my-app"})
    assert response["Location"] == f"/o/{org}/my-app/"
    page = client.get(response["Location"]).content.decode()
    for label in ("Dashboard", "API Keys", "Settings"):
        assert f">{label}</a>" in page


def test_project_slug_is_unique_within_its_organization_only(personas):
    client = personas.client("owner")
    org = personas.organization.slug
    client.post(f"/o/{org}/-/new-project", {"name": "My App", "slug": "my-app"})
    response = client.post(f"/o/{org}/-/new-project", {"name": "Other", "slug": "my-app"})
    assert "already has a project with this slug" in response.content.decode()
    other = personas.client("outsider")
    other_org = personas.other_project.organization.slug
    assert other.post(f"/o/{other_org}/-/new-project", {"name": "My App", "slug": "my-app"}).status_code == 302
    assert Project.objects.filter(slug="my-app").count() == 2


def test_member_cannot_create_projects(personas):
    org = personas.organization.slug
    assert personas.client("member").post(f"/o/{org}/-/new-project", {"name": "X", "slug": "x"}).status_code == 403


def test_selector_lists_only_the_users_organizations(personas):
    html = personas.client("outsider").get("/").content.decode()
    assert personas.other_project.name in html
    assert personas.project.name not in html and personas.organization.name not in html


def _project_urls(project: Project) -> list[tuple[str, str]]:
    base = f"/o/{project.organization.slug}/{project.slug}/"
    org = f"/o/{project.organization.slug}/-/"
    return [
        ("get", base),
        ("get", base + "api-keys"),
        ("get", base + "api-keys/new"),
        ("post", base + "api-keys/new"),
        ("get", base + "api-keys/1/created"),
        ("post", base + "api-keys/1/revoke"),
        ("get", base + "settings"),
        ("post", base + "settings"),
        ("get", org + "new-project"),
        ("post", org + "new-project"),
        ("get", org + "members"),
        ("post", org + "members"),
        ("post", org + "members/1/remove"),
        ("post", org + "invitations/1/revoke"),
    ]


def test_outsider_gets_404_on_every_project_url(personas):
    client = personas.client("outsider")
    for method, url in _project_urls(personas.project):
        response = getattr(client, method)(url, {"name": "Hijack", "slug": "hijack", "email": "x@example.com"})
        assert response.status_code == 404, f"{method.upper()} {url} answered {response.status_code}"
    assert personas.project.api_keys.count() == 0
    assert Project.objects.get(pk=personas.project.pk).name != "Hijack"


def test_anonymous_visitor_is_sent_to_login_from_every_project_url(personas):
    client = Client()
    for method, url in _project_urls(personas.project):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and response["Location"].startswith("/login?next="), url


def test_signed_in_session_that_skipped_the_authenticator_is_not_enough(personas):
    client = Client()
    client.force_login(personas.owner)  # a session without an OTP device
    assert client.get(personas.project.get_absolute_url())["Location"].startswith("/login")


def test_member_can_view_settings_but_not_change_them(personas):
    client = personas.client("member")
    url = f"/o/{personas.organization.slug}/{personas.project.slug}/settings"
    assert client.get(url).status_code == 200
    assert client.post(url, {"name": "Renamed"}).status_code == 403
    assert personas.client("admin").post(url, {"name": "Renamed"}).status_code == 302
    assert Project.objects.get(pk=personas.project.pk).name == "Renamed"


def test_admin_invites_and_invitee_with_account_accepts(personas):
    invitee = UserFactory(email="new.person@example.com")
    admin = personas.client("admin")
    response = admin.post(f"/o/{personas.organization.slug}/-/members", {"email": invitee.email, "role": "member"})
    assert response.status_code == 302
    link = re.search(r"http://\S+/invitations/\S+", mail.outbox[-1].body).group(0)
    path = urlsplit(link).path

    anonymous = Client().get(path).content.decode()
    assert "Sign Up" in anonymous and "Log in" in anonymous

    client = signed_in_client(invitee)
    assert client.post(path)["Location"] == "/"
    assert Membership.objects.get(organization=personas.organization, user=invitee).role == Role.MEMBER
    assert personas.project.name in client.get("/").content.decode()
    assert Client().get(path).status_code == 410  # used


def test_invitation_cannot_be_accepted_by_another_account(personas):
    personas.client("owner").post(
        f"/o/{personas.organization.slug}/-/members", {"email": "someone@example.com", "role": "admin"}
    )
    path = urlsplit(re.search(r"http://\S+/invitations/\S+", mail.outbox[-1].body).group(0)).path
    response = personas.client("outsider").post(path, follow=True)
    assert "This invitation was sent to someone@example.com" in response.content.decode()
    assert not Membership.objects.filter(organization=personas.organization, user=personas.outsider).exists()
    assert Invitation.objects.get().accepted_at is None


def test_member_cannot_invite_and_admin_cannot_invite_owner(personas):
    url = f"/o/{personas.organization.slug}/-/members"
    assert personas.client("member").post(url, {"email": "x@example.com", "role": "member"}).status_code == 403
    response = personas.client("admin").post(url, {"email": "x@example.com", "role": "owner"})
    assert "Only an owner can invite another owner" in response.content.decode()
    assert not Invitation.objects.exists()


def test_inviting_an_existing_member_is_an_error(personas):
    response = personas.client("owner").post(
        f"/o/{personas.organization.slug}/-/members", {"email": personas.member.email, "role": "member"}
    )
    assert "already a member" in response.content.decode()


def test_owner_cannot_be_removed_by_an_admin_nor_the_last_owner_at_all(personas):
    owner_membership = Membership.objects.get(organization=personas.organization, user=personas.owner)
    url = f"/o/{personas.organization.slug}/-/members/{owner_membership.pk}/remove"
    response = personas.client("admin").post(url, follow=True)
    assert "Only an owner can remove an owner" in response.content.decode()
    response = personas.client("owner").post(url, follow=True)
    assert "at least one owner" in response.content.decode()
    assert Membership.objects.filter(pk=owner_membership.pk).exists()


def test_admin_removes_a_member(personas):
    membership = Membership.objects.get(organization=personas.organization, user=personas.member)
    personas.client("admin").post(f"/o/{personas.organization.slug}/-/members/{membership.pk}/remove")
    assert not Membership.objects.filter(pk=membership.pk).exists()
    response = personas.client("member").get(personas.project.get_absolute_url())
    assert response.status_code == 404


def test_admin_sets_the_projects_api_rate_limit(personas):
    url = f"/o/{personas.organization.slug}/{personas.project.slug}/settings"
    client = personas.client("admin")
    assert client.post(url, {"name": personas.project.name, "ingest_rate_limit": "0"}).status_code == 200
    assert client.post(url, {"name": personas.project.name, "ingest_rate_limit": "50"}).status_code == 302
    assert Project.objects.get(pk=personas.project.pk).ingest_rate_limit == 50
    assert "50 requests per second" in client.get(url).content.decode()
