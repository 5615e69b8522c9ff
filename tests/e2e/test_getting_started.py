"""The getting-started guide, sections 1 to 6, clicked through with the guide's own labels.

Section 3's curl commands are read from docs/getting-started.txt and run as written (only the
host is pointed at the live API), against the real API process and a real Celery worker. Section
6 ends where the guide promises: its `track` curl sends exactly one thank-you email to a real SMTP
server, through the workflow built in the browser and run by the live worker; a second purchase
sends none.
"""

import base64
import json
import os
import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from emails.models import Delivery
from organizations.api_keys import api_key_authenticate
from organizations.models import ApiKey, Project, Role
from workflows.models import Run, Workflow

from ..browser import drag_block_below, open_designer
from ..factories import MembershipFactory, ProjectFactory, UserFactory, totp_code, totp_code_for_secret
from ..live import WORKER_START_TIMEOUT, wait_for

pytestmark = pytest.mark.browser


def b32_to_hex(secret: str) -> str:
    """The hex key behind the base32 secret the page shows in groups of four."""
    b32 = re.sub(r"\s+", "", secret).upper()
    b32 += "=" * (-len(b32) % 8)
    return base64.b32decode(b32).hex()


GUIDE = Path(__file__).resolve().parents[2] / "docs" / "getting-started.txt"


def guide_curl_commands() -> dict[str, str]:
    """The guide's curl commands, by endpoint, exactly as the guide prints them."""
    text = GUIDE.read_text()
    commands = re.findall(r"^curl -X POST http://localhost:3030/v1/(\w+) \\\n.*?^}'$", text, re.M | re.S)
    blocks = re.findall(r"^(curl -X POST http://localhost:3030/v1/\w+ \\\n.*?^}')$", text, re.M | re.S)
    return dict(zip(commands, blocks, strict=True))


def run_guide_curl(command: str, api_url: str, key: str) -> dict:
    host = urlsplit(api_url).netloc
    command = command.replace("http://localhost:3030", f"http://{host}", 1)
    result = subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, "TIMONIER_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(result.stdout)


def guide_segment_form() -> dict[str, str]:
    """Section 5's form, as the guide prints it: Name, Description and Condition (JSON)."""
    text = GUIDE.read_text()
    match = re.search(r"^- Name:\n(.+?) - Description:\n(.+?) - Condition \(JSON\):\n(\{.*?\})$", text, re.M)
    return {"Name": match.group(1), "Description": match.group(2), "Condition (JSON)": match.group(3)}


def guide_and_example() -> str:
    """The guide's example of composing conditions (`plan equals pro` and a `purchase` event)."""
    return re.search(r'^\{\n"type": "and",\n.*?^\}$', GUIDE.read_text(), re.M | re.S).group(0)


def builds_on_live_worker(monkeypatch, celery_worker) -> None:
    """Send the platform's segment builds to the live worker's broker.

    The live server runs in this test process, whose broker no worker reads (see tests/live.py):
    its `segment_build_task.delay` is pointed at the worker's broker, as `celery_worker.wake` does
    for the ingest. The live worker then builds the segment for real.
    """

    def delay(segment_id: int) -> None:
        app = celery_worker.publisher()
        with app.connection_for_write(celery_worker.broker_url) as connection:
            app.send_task(
                "segments.tasks.segment_build_task",
                args=[segment_id],
                queue="celery",
                retry=False,
                connection=connection,
            )

    monkeypatch.setattr("segments.tasks.segment_build_task.delay", delay)


def answers_signups_in_process(monkeypatch) -> None:
    """The signup form's answer (the account, the verification email) is a task: the live server's
    wake-up for it runs it here, with this process's PLATFORM_URL and SMTP server (no worker reads
    this process's broker, see above)."""
    from accounts.services import signup_request_answer

    monkeypatch.setattr(
        "accounts.tasks.signup_request_answer_task.delay", lambda pk: signup_request_answer(request_id=pk)
    )


SEGMENT_BUILD_TIMEOUT = 30_000  # ms for the live worker to build a segment and the page to show it
WORKFLOW_EMAIL_TIMEOUT = 30  # s from the track call to the workflow's email at the SMTP server


def guide_workflow_form() -> dict[str, str]:
    """Section 6's New Workflow form, as the guide prints it."""
    text = GUIDE.read_text()
    match = re.search(
        r"^- Name:\n(.+?) - Description:\n(.+?) - Trigger Type: select (.+?)\n"
        r"- Event Name:\n(.+?) - Frequency: select (.+?)\n",
        text,
        re.M,
    )
    return dict(zip(("Name", "Description", "Trigger Type", "Event Name", "Frequency"), match.groups(), strict=True))


@contextmanager
def worker_mailing_to(celery_worker, smtp_server, platform_url: str):
    """The session's live worker, restarted to send its email to this test's SMTP server.

    It mails to the console otherwise (EMAIL_URL is not set for the live processes), and the
    workflow's email is sent by that worker, not by this process. Restored on the way out, so the
    tests after this one get the worker they expect.
    """
    saved = celery_worker.env
    celery_worker.stop()
    celery_worker.env = {
        **saved,
        "EMAIL_URL": f"smtp://{smtp_server.host}:{smtp_server.port}",
        "PLATFORM_URL": platform_url,
    }
    celery_worker.start()
    try:
        celery_worker.wait_until(celery_worker.ready, WORKER_START_TIMEOUT, 'did not log "ready" with the SMTP server')
        yield celery_worker
    finally:
        celery_worker.stop()
        celery_worker.env = saved
        celery_worker.start()
        celery_worker.wait_until(celery_worker.ready, WORKER_START_TIMEOUT, 'did not log "ready" again')


def sweep_workflows(celery_worker, project_id: int) -> None:
    """What celery beat's sweeps would do (no beat runs in tests, see tests/live.py): wake the
    worker for the inbox, the triggers, the due runs, and the deliveries still queued."""
    app = celery_worker.publisher()
    with app.connection_for_write(celery_worker.broker_url) as connection:
        tasks = [
            ("cdp.tasks.process_commands_task", [project_id]),
            ("workflows.tasks.triggers_sweep_task", []),
            ("workflows.tasks.runs_execute_task", []),
        ]
        queued = Delivery.objects.filter(project_id=project_id, status=Delivery.Status.QUEUED)
        tasks += [("emails.tasks.deliver_task", [pk]) for pk in queued.values_list("pk", flat=True)]
        for name, args in tasks:
            app.send_task(name, args=args, queue="celery", retry=False, connection=connection)


def mails_with(smtp_server, recipient: str, text: str) -> list:
    return [mail for mail in smtp_server.to(recipient) if text in mail.text]


def wait_for_workflow_mail(smtp_server, celery_worker, project_id: int, recipient: str, text: str):
    """The first mail to `recipient` containing `text`, sweeping once a second while waiting."""
    deadline = time.monotonic() + WORKFLOW_EMAIL_TIMEOUT
    while not mails_with(smtp_server, recipient, text):
        celery_worker.assert_running()
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"no workflow email to {recipient} within {WORKFLOW_EMAIL_TIMEOUT} s\n{celery_worker.log_tail()}"
            )
        sweep_workflows(celery_worker, project_id)
        time.sleep(1)
    return mails_with(smtp_server, recipient, text)[0]


def test_guide_sections_1_to_6(page: Page, e2e, smtp_server, api_server, celery_worker, monkeypatch, request):
    base = e2e.url
    builds_on_live_worker(monkeypatch, celery_worker)
    answers_signups_in_process(monkeypatch)

    # 1. Create your account.
    page.goto("/signup")
    page.get_by_label("Email").fill("jane@example.com")
    page.get_by_label("First name").fill("Jane")
    page.get_by_label("Last name").fill("Doe")
    page.get_by_role("button", name="Sign Up").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()

    mail = smtp_server.wait_for("jane@example.com")
    assert mail.message["Subject"] == "Verify your email for Timonier"
    links = [link for link in mail.links() if "/verify/" in link]
    assert len(links) == 1, mail.text
    assert links[0].startswith(f"{base}/verify/")
    page.goto(links[0])

    qr = page.locator(".qr")
    expect(qr.locator("svg")).to_be_visible()
    otpauth = qr.get_attribute("data-otpauth")
    assert otpauth.startswith("otpauth://totp/Timonier"), otpauth
    assert "issuer=Timonier" in otpauth
    secret_text = page.locator("#totp-secret").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{1,4})+", secret_text.strip()), secret_text
    secret_hex = b32_to_hex(secret_text)
    assert "secret=" + secret_text.replace(" ", "").strip() in otpauth

    page.get_by_label("6-digit code").fill(totp_code_for_secret(secret_hex))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{base}/")
    expect(page.get_by_test_id("recovery-codes").locator("li")).to_have_count(10)

    # Create an organization.
    page.get_by_role("link", name="Create Organization").click()
    page.get_by_label("Organization Name").fill("Acme Corp")
    page.get_by_label("Slug").fill("acme-corp")
    page.get_by_role("button", name="Create Organization").click()
    expect(page).to_have_url(f"{base}/")
    org_section = page.locator("[data-organization=acme-corp]")
    expect(org_section.get_by_role("heading", name="Acme Corp")).to_be_visible()
    expect(page.get_by_test_id("recovery-codes")).to_have_count(0)  # shown once, right after setup

    # Create a project.
    org_section.get_by_role("link", name="New Project").click()
    page.get_by_label("Project Name").fill("My App")
    page.get_by_label("Slug").fill("my-app")
    page.get_by_role("button", name="Create Project").click()
    expect(page).to_have_url(f"{base}/o/acme-corp/my-app/")
    sidebar = page.get_by_role("navigation", name="Project")
    for label in ("Dashboard", "API Keys", "Settings"):
        expect(sidebar.get_by_role("link", name=label, exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="My App", level=1)).to_be_visible()

    # 2. Get your API key.
    sidebar.get_by_role("link", name="API Keys", exact=True).click()
    expect(page).to_have_url(f"{base}/o/acme-corp/my-app/api-keys")
    page.get_by_role("link", name="New API Key").click()
    page.get_by_label("Key Name").fill("Backend Server")
    page.get_by_role("button", name="Create API Key").click()
    expect(page).to_have_url(re.compile(re.escape(base) + r"/o/acme-corp/my-app/api-keys/\d+/created$"))
    created_url = page.url

    key_input = page.get_by_test_id("api-key")
    expect(key_input).to_be_visible()
    expect(key_input).to_have_attribute("readonly", "")
    raw_key = key_input.input_value()
    assert re.fullmatch(r"tk_[A-Za-z0-9]{40}", raw_key), raw_key
    expect(page.get_by_text("will not be able to see it again")).to_be_visible()

    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.locator("[data-copy-target=api-key]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == raw_key

    key = ApiKey.objects.get(prefix=raw_key[:11])
    assert key.name == "Backend Server"
    assert key.project == Project.objects.get(organization__slug="acme-corp", slug="my-app")
    assert key.created_by.email == "jane@example.com"
    authenticated = api_key_authenticate(raw_key)
    assert authenticated is not None and authenticated.pk == key.pk

    page.get_by_role("link", name="Back to API Keys").click()
    expect(page).to_have_url(f"{base}/o/acme-corp/my-app/api-keys")
    row = page.locator(f"tr[data-key-prefix='{key.prefix}']")
    expect(row.get_by_role("cell", name="Backend Server", exact=True)).to_be_visible()
    expect(row).to_contain_text(key.prefix)
    assert raw_key not in page.content()

    # The key is shown once: coming back to its page shows it no more.
    page.goto(created_url)
    expect(page).to_have_url(f"{base}/o/acme-corp/my-app/api-keys")
    expect(page.get_by_test_id("api-key")).to_have_count(0)
    expect(page.get_by_role("status")).to_contain_text("shown only once")
    assert raw_key not in page.content()

    # 3. Send your first event: the guide's curl commands, as written.
    commands = guide_curl_commands()
    assert list(commands) == ["identify", "track"]
    mark = api_server.log_mark()
    for endpoint in ("identify", "track"):
        answer = run_guide_curl(commands[endpoint], api_server.url, raw_key)
        assert answer["success"] is True and re.fullmatch(r"[0-9a-f-]{36}", answer["command_id"]), answer
    # gunicorn writes its access log line just after the response: wait for both lines.
    wait_for(
        lambda: (
            [(r.path, r.status) for r in api_server.requests(since=mark)] == [("/v1/identify", 202), ("/v1/track", 202)]
        ),
        timeout=10,
        what="the API's access log of the two calls",
    )
    celery_worker.wait_processed(key.project_id)

    # 4. Verify it worked.
    page.goto("/")
    page.locator("[data-organization=acme-corp]").get_by_role("link", name="My App").click()
    sidebar.get_by_role("link", name="Customers", exact=True).click()
    row = page.get_by_test_id("customers").locator("tbody tr").filter(has_text="user_001")
    expect(row).to_contain_text("Jane Doe")
    row.get_by_role("link", name="user_001").click()
    attributes = page.get_by_test_id("attributes")
    expect(page.get_by_role("heading", name="Attributes")).to_be_visible()
    for name, value in (("email", "jane@example.com"), ("name", "Jane Doe"), ("plan", "pro")):
        expect(attributes).to_contain_text(name)
        expect(attributes).to_contain_text(value)
    expect(page.get_by_role("heading", name="Events")).to_be_visible()
    purchase = page.get_by_test_id("events").locator("li").filter(has_text="purchase")
    expect(purchase).to_have_count(1)
    for text in ("item", "T-Shirt", "amount", "29.99", "currency", "USD"):
        expect(purchase).to_contain_text(text)

    # 5. Create your first segment.
    form = guide_segment_form()
    assert form == {
        "Name": "Pro Users",
        "Description": "Customers on the pro plan",
        "Condition (JSON)": '{ "type": "trait", "name": "plan", "op": "equals", "value": "pro" }',
    }
    sidebar.get_by_role("link", name="Segments", exact=True).click()
    expect(page).to_have_url(f"{base}/o/acme-corp/my-app/segments")
    page.get_by_role("link", name="New Segment").click()
    for label, value in form.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Create Segment").click()
    expect(page).to_have_url(re.compile(re.escape(base) + r"/o/acme-corp/my-app/segments/\d+$"))
    expect(page.get_by_role("heading", name="Pro Users", level=1)).to_be_visible()
    expect(page.get_by_text("Customers on the pro plan")).to_be_visible()
    expect(page.get_by_test_id("condition-text")).to_have_text('plan equals "pro"')
    # The page refreshes itself while the live worker builds the segment.
    members = page.get_by_test_id("members").locator("tbody tr")
    expect(members.filter(has_text="Jane Doe")).to_have_count(1, timeout=SEGMENT_BUILD_TIMEOUT)
    expect(members).to_have_count(1)
    expect(members).to_contain_text("user_001")
    expect(page.get_by_test_id("member-count")).to_have_text("1")
    expect(page.get_by_test_id("segment-building")).to_have_count(0)

    # The guide's composed condition: plan equals pro AND a purchase event; Jane bought a T-Shirt.
    sidebar.get_by_role("link", name="Segments", exact=True).click()
    expect(page.get_by_test_id("segments").locator("tbody tr").filter(has_text="Pro Users")).to_contain_text("Ready")
    page.get_by_role("link", name="New Segment").click()
    page.get_by_label("Name", exact=True).fill("Pro Buyers")
    page.get_by_label("Condition (JSON)", exact=True).fill(guide_and_example())
    page.get_by_role("button", name="Create Segment").click()
    expect(page.get_by_role("heading", name="Pro Buyers", level=1)).to_be_visible()
    expect(page.get_by_test_id("condition-text")).to_have_text('plan equals "pro" AND performed purchase')
    members = page.get_by_test_id("members").locator("tbody tr")
    expect(members.filter(has_text="Jane Doe")).to_have_count(1, timeout=SEGMENT_BUILD_TIMEOUT)
    expect(members).to_have_count(1)

    # Her profile lists both segments, and her entries on the Events timeline.
    members.get_by_role("link", name="user_001").click()
    segments = page.get_by_test_id("customer-segments")
    for name in ("Pro Buyers", "Pro Users"):
        expect(segments.get_by_role("link", name=name)).to_be_visible()
        expect(page.get_by_test_id("events").locator("li").filter(has_text=f"Entered segment {name}")).to_have_count(1)

    # 6. Create an email template, exactly as the guide says (no subject set: it starts as the name).
    sidebar.get_by_role("link", name="Email Templates", exact=True).click()
    page.get_by_role("link", name="New Email Template").click()
    page.get_by_label("Name", exact=True).fill("Purchase Thank You")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_role("heading", name="Purchase Thank You")).to_be_visible()
    template_url = page.url
    canvas = open_designer(page)
    first_text = canvas.locator('[data-gjs-type="mj-text"]').first
    expect(first_text).to_be_visible()
    drag_block_below(page, "Text", first_text)
    new_text = canvas.get_by_text("Insert text here")
    expect(new_text).to_be_visible()
    new_text.dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.type("Thank you for your purchase, {{ customer.name }}!")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#designer-status")).to_have_text("Saved")
    page.goto(template_url)
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_test_id("template-status")).to_have_text("Published")
    expect(
        page.frame_locator('iframe[title="Email preview"]').get_by_text("Thank you for your purchase")
    ).to_be_visible()

    # 6. Create the workflow, with the guide's values.
    workflow_form = guide_workflow_form()
    assert workflow_form == {
        "Name": "Purchase Follow-Up",
        "Description": "Send a thank-you email after a purchase",
        "Trigger Type": "Event Occurred",
        "Event Name": "purchase",
        "Frequency": "Once per customer",
    }
    sidebar.get_by_role("link", name="Workflows", exact=True).click()
    page.get_by_role("link", name="New Workflow").click()
    for label in ("Name", "Description"):
        page.get_by_label(label, exact=True).fill(workflow_form[label])
    page.get_by_label("Trigger Type", exact=True).select_option(label=workflow_form["Trigger Type"])
    page.get_by_label("Event Name", exact=True).fill(workflow_form["Event Name"])
    page.get_by_label("Frequency", exact=True).select_option(label=workflow_form["Frequency"])
    page.get_by_role("button", name="Create Workflow").click()
    expect(page.get_by_role("heading", name="Purchase Follow-Up", level=1)).to_be_visible()
    expect(page.get_by_test_id("trigger-text")).to_have_text("When purchase occurs")
    workflow_url = page.url

    # Add an email step: Builder, Add Step → Email, the template, Save on the step configuration.
    page.get_by_role("link", name="Builder", exact=True).click()
    page.wait_for_selector("body[data-builder-ready]")
    page.get_by_role("button", name="Add Step").click()
    page.get_by_role("menuitem", name="Email", exact=True).click()
    step_panel = page.get_by_test_id("step-panel")
    step_panel.get_by_label("Template").select_option(label="Purchase Thank You")
    step_panel.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#builder-status")).to_have_text("Saved")

    # Activate the workflow: back on its detail page.
    page.get_by_role("link", name="← Back to workflow").click()
    expect(page).to_have_url(workflow_url)
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_test_id("workflow-status")).to_have_text("Active")
    workflow = Workflow.objects.get(project=key.project, name="Purchase Follow-Up")
    assert workflow.active_version.number == 1

    # "any customer who triggers a purchase event for the first time will receive the thank-you email"
    thanks = "Thank you for your purchase, Jane Doe!"
    with worker_mailing_to(celery_worker, smtp_server, base):
        run_guide_curl(commands["track"], api_server.url, raw_key)
        celery_worker.wait_processed(key.project_id)
        mail = wait_for_workflow_mail(smtp_server, celery_worker, key.project_id, "jane@example.com", thanks)
        assert mail.message["Subject"] == "Purchase Thank You"

        run_guide_curl(commands["track"], api_server.url, raw_key)  # a second purchase
        celery_worker.wait_processed(key.project_id)
        for _ in range(3):  # give the engine every chance to (wrongly) send again
            sweep_workflows(celery_worker, key.project_id)
            time.sleep(1)
    assert len(mails_with(smtp_server, "jane@example.com", thanks)) == 1
    assert Run.objects.filter(workflow=workflow).count() == 1
    sent = Delivery.objects.filter(project=key.project, customer__external_id="user_001").exclude(kind="test")
    assert sent.count() == 1

    # Where Jane is: her page's Workflows section shows the run and the email it sent.
    page.goto(f"{workflow_url}?status=completed")
    page.get_by_test_id("runs").get_by_role("link", name="user_001").click()
    runs = page.get_by_test_id("customer-runs")
    expect(runs).to_contain_text("Purchase Follow-Up")
    expect(runs).to_contain_text("Completed")
    expect(runs.get_by_test_id("run-delivery")).to_have_count(1)
    results = Path(request.config.getoption("--output")).absolute()
    results.mkdir(parents=True, exist_ok=True)
    page.locator("section", has=page.locator("#workflows-heading")).screenshot(
        path=str(results / "customer-workflows-section.png")
    )


def test_login_with_code_after_logout(page: Page, e2e):
    base = e2e.url
    user = UserFactory()
    project = ProjectFactory()
    MembershipFactory(user=user, organization=project.organization, role=Role.OWNER)
    project_url = f"{base}{project.get_absolute_url()}"

    page.goto("/login")
    page.get_by_label("Email").fill(user.email)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("6-digit code").fill(totp_code(user))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{base}/")
    expect(page.locator(f"[data-organization={project.organization.slug}]")).to_contain_text(project.name)

    page.goto(project_url)
    expect(page.get_by_role("heading", name=project.name, level=1)).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{base}/login")

    page.goto(project_url)
    expect(page).to_have_url(re.compile(re.escape(f"{base}/login?next=")))
    expect(page.get_by_role("heading", name="Log in to Timonier")).to_be_visible()
