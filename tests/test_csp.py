"""The platform's Content-Security-Policy: on every page, no inline script allowed or needed.

The client tests read the header of one page of each kind; the template scan keeps inline script
out of the templates; the browser tests prove Chromium enforces the policy while every page still
works, and that the email preview is a sandbox even when opened on its own.
"""

import re
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client
from playwright.sync_api import Page, expect

from emails import services as email_services
from organizations.models import Role
from tests.conftest import signed_in_client

# The e2e harness's fixtures: the live server `e2e`, `base_url`, Chromium's path and flags.
from tests.e2e.conftest import base_url, browser_context_args, browser_type_launch_args, e2e  # noqa: F401
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

ROOT = Path(__file__).resolve().parent.parent
HEADER = "Content-Security-Policy"
MJML = (
    "<mjml><mj-body><mj-section><mj-column>"
    '<mj-image src="/static/emails/img/placeholder.png"></mj-image>'
    '<mj-text>Hello <a href="https://shop.example.com/">shop</a></mj-text>'
    "</mj-column></mj-section></mj-body></mjml>"
)


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def project_url(project, path=""):
    return f"/o/{project.organization.slug}/{project.slug}/{path}"


def make_template(project):
    template = email_services.template_create(project=project, name="Welcome", user=None)
    email_services.template_save_design(template=template, design={"pages": []}, mjml=MJML)
    return template


# --- The header ---------------------------------------------------------------------------------


def test_the_site_wide_policy_allows_no_inline_script_and_no_framing():
    policy = directives(django_settings.CONTENT_SECURITY_POLICY)
    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["style-src"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login", "/signup", "/e/u/not-a-token", "/no-such-page"])
def test_public_pages_carry_the_policy(path):
    response = Client().get(path)

    assert response.status_code in (200, 400, 404)
    assert response[HEADER] == django_settings.CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    "path",
    ["", "customers", "segments", "segments/new", "email-templates", "email-templates/new", "api-keys", "settings"],
)
def test_project_pages_carry_the_policy(personas, path):
    response = personas.client("member").get(project_url(personas.project, path))

    assert response.status_code == 200
    assert response[HEADER] == django_settings.CONTENT_SECURITY_POLICY


def test_organization_and_account_pages_carry_the_policy(personas):
    client = personas.client("owner")
    for path in ("/", "/account", f"/o/{personas.organization.slug}/-/members"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response[HEADER] == django_settings.CONTENT_SECURITY_POLICY, path


def test_a_template_page_carries_the_policy_and_the_designer_keeps_its_own(personas):
    template = make_template(personas.project)
    client = personas.client("member")

    page = client.get(project_url(personas.project, f"email-templates/{template.pk}"))
    designer = client.get(project_url(personas.project, f"email-templates/{template.pk}/designer"))

    assert page[HEADER] == django_settings.CONTENT_SECURITY_POLICY
    assert directives(designer[HEADER])["script-src"] == ["'self'"]
    assert "blob:" in directives(designer[HEADER])["img-src"]  # the designer's own, not the site's


def test_the_email_preview_is_a_sandbox_without_forms_or_base_url(personas):
    template = make_template(personas.project)

    response = personas.client("member").get(project_url(personas.project, f"email-templates/{template.pk}/preview"))

    policy = directives(response[HEADER])
    assert response.status_code == 200
    assert "sandbox" in policy and policy["sandbox"] == []  # no allow-scripts, no allow-same-origin
    assert policy["form-action"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["default-src"] == ["'none'"]


# --- The templates --------------------------------------------------------------------------------

SCRIPT_TAG = re.compile(r"<script\b([^>]*)>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"""<[^>]*\s(on[a-z]+)\s*=""", re.IGNORECASE)


def template_files() -> list[Path]:
    """The project's templates and its apps' (`*/templates`: not those of .venv or node_modules)."""
    return sorted(path for folder in [ROOT / "templates", *ROOT.glob("*/templates")] for path in folder.rglob("*.html"))


def test_no_template_has_inline_script_or_event_handlers():
    assert len(template_files()) > 20
    problems = []
    for path in template_files():
        text = path.read_text()
        for attributes in SCRIPT_TAG.findall(text):
            if "src=" not in attributes:
                problems.append(f"{path.relative_to(ROOT)}: inline <script{attributes}>")
        problems += [f"{path.relative_to(ROOT)}: {name}= handler" for name in EVENT_HANDLER.findall(text)]
        if re.search(r"""href\s*=\s*["']\s*javascript:""", text, re.IGNORECASE):
            problems.append(f"{path.relative_to(ROOT)}: javascript: URL")
    assert problems == []


# --- In Chromium --------------------------------------------------------------------------------


class Violations:
    """What the policy refused on a page, as Chromium reports it on the console."""

    def __init__(self, page: Page):
        self.messages: list[str] = []
        page.on("console", self._console)

    def _console(self, message) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.messages.append(message.text)


@pytest.fixture
def signed_in(e2e, page: Page):  # noqa: F811 (the imported fixture)
    project = ProjectFactory(name="Acme Shop")
    user = UserFactory()
    MembershipFactory(user=user, organization=project.organization, role=Role.OWNER)
    session = signed_in_client(user).cookies[django_settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "value": session, "url": e2e.url}])
    return project


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_pages_work_under_the_policy_and_injected_inline_script_does_not_run(signed_in, page: Page):
    project = signed_in
    violations = Violations(page)

    page.goto(project_url(project, "segments/new"))
    # The segment builder is static JavaScript: it runs and draws its editor.
    expect(page.get_by_role("button", name="Visual")).to_be_visible()
    page.goto(project_url(project))
    expect(page.get_by_role("heading", name="Acme Shop")).to_be_visible()
    assert violations.messages == []

    ran = page.evaluate(
        """() => new Promise((resolve) => {
            const settle = () => setTimeout(() => resolve(window.injected === true), 200);
            document.addEventListener("securitypolicyviolation", settle);
            setTimeout(settle, 2000);  // no policy: nothing reports, the handler has run by then
            document.body.insertAdjacentHTML("beforeend", '<img src="data:," onerror="window.injected = true">');
            const script = document.createElement("script");
            script.textContent = "window.injected = true";
            document.body.append(script);
        })"""
    )

    assert ran is False
    assert page.evaluate("window.injected") is None
    assert violations.messages  # Chromium refused and said so


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_preview_shows_the_email_with_its_images_and_nothing_else_runs(signed_in, page: Page):
    project = signed_in
    template = make_template(project)
    violations = Violations(page)

    page.goto(project_url(project, f"email-templates/{template.pk}"))
    preview = page.frame_locator('iframe[title="Email preview"]')
    expect(preview.get_by_text("Hello")).to_be_visible()
    image = preview.locator("img").first
    expect(image).to_be_visible()
    assert image.evaluate("img => img.complete && img.naturalWidth") > 0  # same-origin images still load
    assert violations.messages == []

    # Opened on its own, outside the page's sandboxed iframe, the preview is still a sandbox.
    page.goto(project_url(project, f"email-templates/{template.pk}/preview"))
    expect(page.get_by_text("Hello")).to_be_visible()
    assert page.evaluate("() => { try { return document.cookie; } catch (e) { return 'blocked'; } }") == "blocked"
