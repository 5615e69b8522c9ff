"""The email designer in Chromium against the live platform server, and a test send to a real SMTP server.

The issue's "Done when": create "Purchase Thank You" from the sidebar, open the designer, drag a
text block onto the canvas, type a thank-you, Save, reopen (the block is there), Publish, then send
a test that arrives with the compiled HTML, a text part, the open pixel and the unsubscribe headers.
Every request the browser makes is checked: none may leave 127.0.0.1.
"""

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import Page, expect

import emails
from emails.models import Delivery, EmailTemplate
from organizations.models import Role
from tests.browser import drag_block_below, open_designer
from tests.conftest import signed_in_client

# The e2e harness's fixtures: the live server `e2e`, `base_url`, Chromium's path and flags.
from tests.e2e.conftest import base_url, browser_context_args, browser_type_launch_args, e2e  # noqa: F401
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from timonier.celery import app as celery_app

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

THANKS = "Thank you for your purchase!"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Network:
    """Every request of the browser context: the ones for another host are recorded and aborted."""

    def __init__(self, page: Page):
        self.external: list[str] = []
        self.refused: list[str] = []  # what a Content-Security-Policy blocked (it never reaches `route`)
        page.context.route("**/*", self._route)
        page.on("console", self._console)

    def _route(self, route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob", "about") or urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            self.external.append(url)
            route.abort()

    def _console(self, message) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.refused.append(message.text)


@pytest.fixture
def signed_in(e2e, page: Page, settings, tmp_path):  # noqa: F811 (the imported fixture)
    """A project, its owner signed in in the browser, and uploads kept in a folder of the test."""
    settings.MEDIA_ROOT = tmp_path
    project = ProjectFactory(name="Acme Shop")
    user = UserFactory()
    MembershipFactory(user=user, organization=project.organization, role=Role.OWNER)
    session = signed_in_client(user).cookies[django_settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "value": session, "url": e2e.url}])
    return project


@pytest.fixture
def tasks_run_in_process():
    """The test send's Celery task runs in the live server's thread, with this test's SMTP settings."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


def declarations_sorted(data):
    """Project data with each inline `style` attribute's declarations sorted: grapesjs-mjml derives
    that attribute from the MJML attributes on load, in an order of its own."""
    if isinstance(data, dict):
        return {
            key: ";".join(sorted(filter(None, value.split(";"))))
            if key == "style" and isinstance(value, str)
            else declarations_sorted(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [declarations_sorted(item) for item in data]
    return data


def signed_in_url(page: Page) -> str:
    parts = urlsplit(page.url)
    return f"{parts.scheme}://{parts.netloc}"


def upload_image(page: Page, name: str, content: bytes):
    """Choose a file in the asset manager's uploader; the upload's response.

    The wait happens inside Playwright: its loop must run for `Network` to let the request through
    (a `time.sleep` in the test would hold the upload at the route).
    """
    is_upload = lambda r: r.request.method == "POST" and "/email-images" in r.url  # noqa: E731
    with page.expect_response(is_upload) as response:
        page.locator(".gjs-mdl-dialog input[type=file]").set_input_files(
            files=[{"name": name, "mimeType": "image/png", "buffer": content}]
        )
    return response.value


def test_design_save_reopen_publish_and_send_a_test(signed_in, page: Page, smtp_server, tasks_run_in_process):
    project = signed_in
    network = Network(page)
    page.goto(f"/o/{project.organization.slug}/{project.slug}/customers")

    page.get_by_role("navigation", name="Project").get_by_role("link", name="Email Templates").click()
    page.get_by_role("link", name="New Email Template").click()
    page.get_by_label("Name").fill("Purchase Thank You")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Purchase Thank You")).to_be_visible()
    template_url = page.url

    canvas = open_designer(page)
    greeting = canvas.locator('[data-gjs-type="mj-text"]', has_text="Hello").first
    expect(greeting).to_be_visible()
    drag_block_below(page, "Text", greeting)
    new_text = canvas.get_by_text("Insert text here")
    expect(new_text).to_be_visible()
    new_text.dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.type(THANKS)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#designer-status")).to_have_text("Saved")

    template = EmailTemplate.objects.get(project=project, name="Purchase Thank You")
    assert THANKS in template.mjml
    assert template.mjml.startswith("<mjml><mj-body>") and template.mjml.count("<mj-text") == 2
    saved_design = template.design

    page.reload()
    page.wait_for_selector("body[data-designer-ready]", timeout=20_000)
    canvas = page.frame_locator("iframe.gjs-frame")
    expect(canvas.get_by_text(THANKS)).to_be_visible()
    assert page.evaluate("window.timonierDesigner.getHtml()") == template.mjml
    reopened = json.loads(page.evaluate("JSON.stringify(window.timonierDesigner.getProjectData())"))
    assert declarations_sorted(reopened) == declarations_sorted(saved_design)

    page.get_by_role("link", name="← Back to template").click()
    assert page.url == template_url
    expect(page.frame_locator('iframe[title="Email preview"]').get_by_text(THANKS)).to_be_visible()
    page.get_by_role("button", name="Mobile").click()
    assert page.locator('iframe[title="Email preview"]').evaluate("frame => frame.offsetWidth") == 375
    page.get_by_label("Subject").fill("Thanks for your order, {{ customer.name }}")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Settings saved.")).to_be_visible()
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_text("Published version 1.")).to_be_visible()
    expect(page.get_by_test_id("template-status")).to_have_text("Published")
    expect(page.get_by_test_id("versions")).to_contain_text("v1")

    # Test sends go only to members of the organization: the signed-in owner's own address.
    me = project.organization.memberships.get().user.email
    page.get_by_label("Send test to").fill(me)
    page.get_by_role("button", name="Send test").click()
    expect(page.get_by_text(f"Test email to {me} queued")).to_be_visible()

    mail = smtp_server.wait_for(me, timeout=20)
    assert mail.message["Subject"] == "Thanks for your order, Jane Doe"
    assert THANKS in mail.html and "<table" in mail.html  # compiled from MJML
    assert THANKS in mail.text
    assert "/e/o/" in mail.html  # the open-tracking pixel
    assert mail.message["List-Unsubscribe"]
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    pixel = re.search(r'<img[^>]+src="([^"]*/e/o/[^"]+)"', mail.html).group(1)
    assert page.request.get(pixel).ok
    assert Delivery.objects.get(to_email=me).opened_at is not None

    assert network.external == []
    assert network.refused == []


def test_image_upload_from_the_designer_is_stored_and_shown(signed_in, page: Page, tmp_path):
    project = signed_in
    network = Network(page)
    page.goto(f"/o/{project.organization.slug}/{project.slug}/email-templates/new")
    page.get_by_label("Name").fill("With a picture")
    page.get_by_role("button", name="Create").click()
    canvas = open_designer(page)
    drag_block_below(page, "Image", canvas.locator('[data-gjs-type="mj-text"]').first)
    placeholder = canvas.locator('img[src$="/static/emails/img/placeholder.png"]')
    expect(placeholder).to_be_visible()  # a local placeholder, not the plugin's third-party one
    expect(page.locator(".gjs-mdl-dialog")).to_be_visible()  # the dropped image opens the asset manager

    png = (Path(emails.__file__).parent / "static/emails/img/placeholder.png").read_bytes()  # 600×300
    response = upload_image(page, "logo.png", png)

    assert response.status == 200
    [stored] = (tmp_path / "email-images" / str(project.pk)).iterdir()
    assert stored.read_bytes() == png
    assert response.json() == {"data": [f"{signed_in_url(page)}/media/email-images/{project.pk}/{stored.name}"]}
    asset = page.locator(".gjs-mdl-dialog .gjs-am-asset-image").first
    expect(asset).to_be_visible()
    asset.click()
    image = canvas.locator(f'img[src$="/media/email-images/{project.pk}/{stored.name}"]')
    expect(image).to_be_visible()
    assert image.evaluate("img => img.naturalWidth") == 600
    assert network.external == []
    assert network.refused == []


def test_every_block_drops_saves_and_compiles_without_leaving_loopback(signed_in, page: Page):
    """Sections, columns, text, image, button, divider, spacer, social and raw HTML: each one dropped
    on the canvas, then saved, compiles on the server without a problem, and nothing the editor
    shows for them comes from another host (web fonts, social icons, placeholder images)."""
    project = signed_in
    network = Network(page)
    page.goto(f"/o/{project.organization.slug}/{project.slug}/email-templates/new")
    page.get_by_label("Name").fill("Every block")
    page.get_by_role("button", name="Create").click()
    canvas = open_designer(page)
    greeting = canvas.locator('[data-gjs-type="mj-text"]', has_text="Hello").first
    blocks = ["1 Column", "2 Columns", "3 Columns", "Wrapper", "Raw"]  # into the body
    blocks += ["Text", "Image", "Button", "Divider", "Spacer", "Group Social"]  # into the column

    for label in blocks:
        drag_block_below(page, label, greeting)
        if label == "Image":  # a dropped image opens the asset manager
            page.locator(".gjs-mdl-btn-close").click()
    page.get_by_role("button", name="Save").click()

    expect(page.locator("#designer-status")).to_contain_text("Saved")
    assert page.locator("#designer-problems").inner_text() == ""
    expect(page.locator("#designer-status")).to_have_text("Saved")  # and no problem listed
    mjml = EmailTemplate.objects.get(project=project, name="Every block").mjml
    tags = ["mj-section", "mj-column", "mj-wrapper", "mj-raw", "mj-text", "mj-image", "mj-button", "mj-divider"]
    tags += ["mj-spacer", "mj-social", "mj-social-element"]
    assert all(f"<{tag}" in mjml for tag in tags), mjml
    assert mjml.count("<mj-section") >= 4 and mjml.count("<mj-column") >= 7
    assert re.search(r'<mj-social-element name="facebook" src="http://[^"]+/static/emails/social/facebook.png"', mjml)
    assert network.external == []
    assert network.refused == []


def test_liquid_typed_in_the_designer_survives_its_html_escaping(signed_in, page: Page):
    """The editor stores `>` and `&` typed in a text block as entities; the preview still runs the Liquid."""
    project = signed_in
    page.goto(f"/o/{project.organization.slug}/{project.slug}/email-templates/new")
    page.get_by_label("Name").fill("Liquid")
    page.get_by_role("button", name="Create").click()
    canvas = open_designer(page)
    greeting = canvas.locator('[data-gjs-type="mj-text"]', has_text="Hello").first
    drag_block_below(page, "Text", greeting)
    new_text = canvas.get_by_text("Insert text here")
    new_text.dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.type('{% if customer.traits.plan == "pro" and 2 > 1 %}Pro & friends{% endif %}')
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#designer-status")).to_have_text("Saved")

    mjml = EmailTemplate.objects.get(project=project, name="Liquid").mjml
    assert "2 &gt; 1" in mjml and "Pro &amp; friends" in mjml  # as the editor writes it
    page.get_by_role("link", name="← Back to template").click()
    preview = page.frame_locator('iframe[title="Email preview"]')
    expect(preview.get_by_text("Pro & friends")).to_be_visible()  # sample data: plan "pro"
    expect(preview.get_by_text("{%")).to_have_count(0)
