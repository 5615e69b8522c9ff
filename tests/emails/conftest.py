import time

import pytest

from cdp.inbox import commands_enqueue
from cdp.messages import normalize
from cdp.models import Customer
from cdp.processing import commands_process
from emails.services import template_create, template_publish, template_save_design, template_update_settings
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.smtp import smtp_server  # noqa: F401 (the real SMTP server fixture)
from timonier import clock

MJML = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Thank you {{ customer.name | default: "friend" }}!</mj-text>
        <mj-button href="https://shop.example.com/orders?id=7">See your order</mj-button>
        <mj-text><a href="https://shop.example.com/help?utm_source=own">Help</a>
          <a href="mailto:help@example.com">Write</a></mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""

SETTINGS = {
    "subject": "Thanks {{ customer.name }}",
    "preheader": "Your order",
    "from_name": "Acme Shop",
    "from_email": "shop@acme.example",
    "reply_to": "help@acme.example",
    "utm_source": "timonier",
    "utm_medium": "email",
    "utm_campaign": "thanks",
    "utm_content": "",
    "track_opens": True,
    "track_clicks": True,
}


def identify(project, customer_id: str, traits: dict) -> Customer:
    """A customer made the way the API makes them: an identify through the inbox and the processor."""
    now = clock.now()
    raw = {"type": "identify", "customer_id": customer_id, "traits": traits}
    commands_enqueue(project_id=project.pk, messages=[normalize(raw, received_at=now)], received_at=now)
    process(project)
    return Customer.objects.get(project=project, external_id=customer_id)


def process(project) -> None:
    """Until the project's inbox is empty. None: a live worker of the test (email_worker) holds the
    project and is applying the same commands; wait for it, boundedly."""
    deadline = time.monotonic() + 30
    while (result := commands_process(project_id=project.pk)) is None or result.commands:
        assert time.monotonic() < deadline, "the inbox did not empty"
        if result is None:
            time.sleep(0.05)


def make_template(project, *, name="Purchase Thank You", mjml=MJML, publish=False, **settings):
    user = UserFactory()
    from_email = {**SETTINGS, **settings}["from_email"]
    if from_email and (domain := from_email.rpartition("@")[2].lower()) not in project.sending_domains:
        # Declared in the project's Settings, as a From address on another domain is refused.
        project.sending_domains = [*project.sending_domains, domain]
        project.save(update_fields=["sending_domains"])
    template = template_create(project=project, name=name, user=user)
    template_update_settings(template=template, **{**SETTINGS, **settings})
    assert template_save_design(template=template, design={"pages": []}, mjml=mjml) == []
    if publish:
        template_publish(template=template, user=user)
    template.refresh_from_db()
    return template


def teammate(project, email: str):
    """A member of the project's organization with this address: test sends go only to members."""
    return MembershipFactory(organization=project.organization, user=UserFactory(email=email.lower())).user


@pytest.fixture
def project(db):
    return ProjectFactory(name="Acme")


@pytest.fixture
def platform_url(settings):
    settings.PLATFORM_URL = "http://platform.test"
    settings.ALLOWED_HOSTS = ["*"]
    return settings.PLATFORM_URL
