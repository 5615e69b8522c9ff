"""Sending through Django's SMTP backend to a real SMTP server (aiosmtpd on 127.0.0.1)."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core import signing

from emails import tracking
from emails.models import Delivery
from emails.sending import delivery_send
from emails.services import deliver, send_test
from emails.tasks import deliver_task
from tests.factories import ProjectFactory

from .conftest import identify, make_template, teammate


def test_a_test_send_arrives_with_html_text_pixel_tracked_links_and_unsubscribe_headers(
    project, smtp_server, platform_url, django_capture_on_commit_callbacks
):
    template = make_template(project)
    teammate(project, "tester@example.com")
    with django_capture_on_commit_callbacks() as callbacks:
        delivery = send_test(template=template, to_email="Tester@Example.com", user=None)
    assert len(callbacks) == 1  # deliver_task is enqueued after the commit
    deliver_task(delivery.pk)  # what the worker runs

    mail = smtp_server.wait_for("tester@example.com")
    message = mail.message
    assert message["Subject"] == "Thanks Jane Doe"
    assert message["From"] == "Acme Shop <shop@acme.example>"
    assert message["Reply-To"] == "help@acme.example"
    assert message.get_content_type() == "multipart/alternative"
    unsubscribe = tracking.unsubscribe_url(delivery.pk)
    assert message["List-Unsubscribe"].strip() == f"<{unsubscribe}>"  # a long header is folded
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    html, text = mail.html, mail.text
    assert "Thank you Jane Doe!" in html and "Thank you Jane Doe!" in text
    assert f'<img src="{tracking.open_url(delivery.pk)}" width="1" height="1" alt=""' in html
    assert html.index("/e/o/") < html.index("</body>")
    assert "/e/o/" not in text

    hrefs = re.findall(r'href="([^"]+)"', html)
    tracked = [h for h in hrefs if h.startswith(f"{platform_url}/e/c/")]
    targets = [tracking.click_target(h.rsplit("/", 1)[1])[1] for h in tracked]
    order = next(t for t in targets if "/orders" in t)
    assert parse_qs(urlsplit(order).query) == {
        "id": ["7"],
        "utm_source": ["timonier"],
        "utm_medium": ["email"],
        "utm_campaign": ["thanks"],
    }
    assert "https://shop.example.com/help?utm_source=own" in targets  # its own UTM kept as is
    assert "mailto:help@example.com" in hrefs  # not tracked
    assert unsubscribe in [h.replace("&amp;", "&") for h in hrefs]  # the footer, untracked
    assert "Unsubscribe (" + unsubscribe + ")" in text
    assert "See your order (" + platform_url + "/e/c/" in text

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT and delivery.sent_at is not None
    assert delivery.message_id == message["Message-ID"]


def test_running_the_task_twice_sends_once(project, smtp_server, platform_url):
    template = make_template(project, publish=True)
    customer = identify(project, "u-1", {"email": "ada@example.com", "name": "Ada"})
    delivery = deliver(version=template.published_version, customer=customer, event={"name": "Order Completed"})
    deliver_task(delivery.pk)
    deliver_task(delivery.pk)
    assert smtp_server.wait_for("ada@example.com").message["Subject"] == "Thanks Ada"
    assert len(smtp_server.to("ada@example.com")) == 1


def test_an_unlinked_unsubscribe_in_the_template_is_not_duplicated(project, smtp_server, platform_url):
    mjml = (
        "<mjml><mj-body><mj-section><mj-column><mj-text>Hi "
        '<a href="{{ unsubscribe_url }}">Stop these emails</a></mj-text></mj-column></mj-section></mj-body></mjml>'
    )
    template = make_template(project, mjml=mjml, track_opens=False, track_clicks=False, publish=True)
    customer = identify(project, "u-1", {"email": "ada@example.com"})
    delivery = deliver(version=template.published_version, customer=customer)
    delivery_send(delivery_id=delivery.pk)
    mail = smtp_server.wait_for("ada@example.com")
    assert mail.html.count(tracking.unsubscribe_url(delivery.pk)) == 1
    assert "/e/o/" not in mail.html and "/e/c/" not in mail.html
    assert "Stop these emails (" in mail.text


def test_an_smtp_failure_is_recorded_on_the_delivery(project, settings, platform_url):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2  # nothing listens
    template = make_template(project, publish=True)
    customer = identify(project, "u-1", {"email": "ada@example.com"})
    delivery = deliver(version=template.published_version, customer=customer)
    delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED
    assert "ConnectionRefusedError" in delivery.error


def test_a_click_token_cannot_be_reused_for_another_url(project):
    token = signing.Signer(salt="another.salt").sign_object({"d": 1, "u": "https://evil.example.com"})
    try:
        tracking.click_target(token)
    except tracking.BadToken:
        return
    raise AssertionError("a token signed with another salt was accepted")


@pytest.mark.slow
def test_end_to_end_a_send_then_its_pixel_and_link_over_http(transactional_db, live_server, settings, smtp_server):
    """The real path: SMTP server receives the email; its pixel and tracked link are fetched from
    the live platform server like a mail client would."""
    settings.PLATFORM_URL = live_server.url
    project = ProjectFactory(name="Acme")
    template = make_template(project, publish=True)
    customer = identify(project, "ada", {"email": "ada@example.com", "name": "Ada"})
    delivery = deliver(version=template.published_version, customer=customer)
    deliver_task(delivery.pk)
    mail = smtp_server.wait_for("ada@example.com")

    pixel = re.search(r'<img src="([^"]+/e/o/[^"]+)"', mail.html).group(1)
    assert requests.get(pixel, timeout=10).headers["Content-Type"] == "image/gif"
    link = next(url for url in re.findall(r'href="([^"]+)"', mail.html) if "/e/c/" in url)
    response = requests.get(link.replace("&amp;", "&"), allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("https://shop.example.com/orders?id=7&utm_source=timonier")

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.CLICKED
    assert (delivery.open_count, delivery.click_count) == (1, 1)


def test_the_sweep_sends_a_delivery_whose_task_was_lost(project, smtp_server, platform_url, monkeypatch):
    from datetime import timedelta

    from emails.tasks import deliveries_sweep_task
    from timonier import clock

    template = make_template(project)
    teammate(project, "lost@example.com")
    delivery = send_test(template=template, to_email="lost@example.com", user=None)  # its task never runs
    assert deliveries_sweep_task() == 0  # just queued: its task may still come

    later = clock.now() + timedelta(minutes=3)
    monkeypatch.setattr("timonier.clock.now", lambda: later)
    assert deliveries_sweep_task() == 1
    smtp_server.wait_for("lost@example.com")
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    assert deliveries_sweep_task() == 0
