"""New API Key in Chromium: the page asks which kind of key, and the list shows it."""

import re

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import Page, expect

from organizations.models import ApiKey, Role
from tests.conftest import signed_in_client

# The e2e harness's fixtures: the live server `e2e`, `base_url`, Chromium's path and flags.
from tests.e2e.conftest import base_url, browser_context_args, browser_type_launch_args, e2e  # noqa: F401
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def project(e2e, page: Page):  # noqa: F811 (the imported fixture)
    project = ProjectFactory()
    user = UserFactory()
    MembershipFactory(user=user, organization=project.organization, role=Role.ADMIN)
    session = signed_in_client(user).cookies[django_settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "value": session, "url": e2e.url}])
    return project


def test_new_api_key_asks_secret_or_write_and_the_list_shows_which(page: Page, project):
    page.goto(f"/o/{project.organization.slug}/{project.slug}/api-keys")
    page.get_by_role("link", name="New API Key").click()

    kind = page.get_by_role("group", name="Key type")
    expect(kind.get_by_label("Secret key")).to_be_checked()
    expect(kind.get_by_label("Write key")).not_to_be_checked()
    expect(kind).to_contain_text("A write key is public")
    expect(kind).to_contain_text("and can only send calls.")
    expect(kind).to_contain_text("A secret key can send calls and also read customers and events")

    kind.get_by_label("Write key").check()
    page.get_by_label("Key Name").fill("Website")
    page.get_by_role("button", name="Create API Key").click()
    raw_key = page.get_by_test_id("api-key").input_value()
    assert re.fullmatch(r"tk_[A-Za-z0-9]{40}", raw_key)
    assert ApiKey.objects.get(prefix=raw_key[:11]).scope == ApiKey.Scope.WRITE

    page.get_by_role("link", name="Back to API Keys").click()
    row = page.locator(f"tr[data-key-prefix='{raw_key[:11]}']")
    expect(row.get_by_role("cell").nth(1)).to_have_text("Write key")
    expect(page.get_by_role("columnheader", name="Type")).to_be_visible()
