"""A send task's chunk: claimed, loaded, checked and recorded in a fixed number of statements, the
template compiled once per version, the emails unchanged (a real SMTP server on 127.0.0.1)."""

import re

import pytest
from aiosmtpd.controller import Controller
from django.db import connection
from django.test.utils import CaptureQueriesContext

from emails import personalisation, rendering
from emails.compiling import compile_mjml
from emails.deliveries import Send, deliver_many
from emails.models import Delivery, Unsubscription
from emails.rendering import compiled_with_liquid, render_delivery
from emails.sending import as_bytes, compose, deliveries_send
from emails.tasks import deliveries_send_task
from tests.smtp import SMTPServer, _free_port

from .conftest import identify, make_template

GUIDE_MJML = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Thank you for your purchase, {{ customer.name }}!</mj-text>
        <mj-text>Your {{ event.properties.item | default: "order" }} is on its way.</mj-text>
        <mj-button href="https://shop.example.com/orders">See your order</mj-button>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""


def customers(project, count: int, prefix: str = "c"):
    return [
        identify(project, f"{prefix}{n}", {"email": f"{prefix}{n}@example.com", "name": f"Customer {n} <&>"})
        for n in range(count)
    ]


def queued(version, people, **send) -> list[Delivery]:
    return deliver_many([Send(version, person, **send) for person in people])


@pytest.fixture
def fresh_compiles():
    compiled_with_liquid.cache_clear()
    yield
    compiled_with_liquid.cache_clear()


def test_a_chunk_is_claimed_loaded_checked_and_recorded_in_four_statements_whatever_its_size(
    project, smtp_server, platform_url
):
    version = make_template(project, mjml=GUIDE_MJML, publish=True).published_version
    people = customers(project, 12)
    small, large = queued(version, people[:2]), queued(version, people[2:])
    Unsubscription.objects.create(project=project, email="c3@example.com")  # after deliver(): skipped at send time

    for chunk in (small, large):
        with CaptureQueriesContext(connection) as queries:
            deliveries_send(delivery_ids=[d.pk for d in chunk])
        assert len(queries) == 4, [q["sql"][:80] for q in queries]

    statuses = dict(Delivery.objects.values_list("to_email", "status"))
    assert statuses.pop("c3@example.com") == Delivery.Status.FAILED
    assert set(statuses.values()) == {Delivery.Status.SENT}
    assert Delivery.objects.get(to_email="c3@example.com").error == "skipped: the recipient has unsubscribed"
    # Sent in the order of the chunk, each once, each with its own tracking links.
    received = [m.rcpt_tos[0] for m in smtp_server.messages]
    assert received == [p.email for p in people if p.email != "c3@example.com"]
    for delivery in Delivery.objects.filter(status=Delivery.Status.SENT):
        mail = smtp_server.wait_for(delivery.to_email)
        assert mail.message["Message-ID"] == delivery.message_id and delivery.sent_at is not None
        assert f"{platform_url}/e/o/" in mail.html and f"{platform_url}/e/c/" in mail.html
        assert mail.message["Subject"] == f"Thanks {delivery.customer.traits['name']}"


def test_running_a_chunk_again_sends_nothing_more(project, smtp_server, platform_url):
    version = make_template(project, mjml=GUIDE_MJML, publish=True).published_version
    chunk = [d.pk for d in queued(version, customers(project, 3))]
    deliveries_send_task(chunk)
    with CaptureQueriesContext(connection) as queries:
        assert deliveries_send(delivery_ids=chunk) == 0
    assert len(queries) == 1  # the claim, which finds nothing queued
    assert len(smtp_server.messages) == 3


def test_a_version_is_compiled_once_for_all_its_recipients(
    project, smtp_server, platform_url, fresh_compiles, monkeypatch
):
    version = make_template(project, mjml=GUIDE_MJML, publish=True).published_version
    compiled = []

    def counting_compile(source, **options):  # the real compiler, counted
        compiled.append(source)
        return compile_mjml(source, **options)

    monkeypatch.setattr(rendering, "compile_mjml", counting_compile)
    people = customers(project, 6)
    for chunk in (people[:3], people[3:]):
        deliveries_send(delivery_ids=[d.pk for d in queued(version, chunk)])
    assert len(compiled) == 1 and "{{ customer.name }}" in compiled[0]
    assert (
        smtp_server.wait_for("c5@example.com").html.count("Thank you for your purchase, Customer 5 &lt;&amp;&gt;!") == 1
    )


@pytest.mark.parametrize(
    "name",
    ["Ada", 'Ada "The Countess" <b>Lovelace</b> & co', "Zoë 😀", "  two\n lines  ", "{{ customer.email }}", ""],
)
def test_liquid_rendered_after_compiling_makes_the_email_rendering_before_compiling_made(
    project, platform_url, fresh_compiles, name
):
    version = make_template(project, mjml=GUIDE_MJML, publish=True).published_version
    (person,) = customers(project, 1)
    person.traits = {**person.traits, "name": name}
    (delivery,) = queued(version, [person], event={"properties": {"item": "Tee & <Cap>"}})
    assert compiled_with_liquid(version.mjml, version.preheader, rendering.social_icon_origin()) is not None

    fast = render_delivery(delivery)
    context = personalisation.render_context(person, delivery.event)
    context["unsubscribe_url"] = rendering.tracking.unsubscribe_url(delivery.pk)
    compiled_per_recipient = compile_mjml(
        personalisation.render(version.mjml, context=context, html=True), preheader=version.preheader
    )
    assert rendering._personalise(version, context)[2] == compiled_per_recipient
    assert "Tee &amp; &lt;Cap&gt;" in fast.html


def test_a_template_whose_tags_wrap_elements_is_compiled_for_each_recipient(project, platform_url, fresh_compiles):
    mjml = GUIDE_MJML.replace("<mj-button", "{% if customer.traits.vip %}<mj-button").replace(
        "</mj-button>", "</mj-button>{% endif %}"
    )
    version = make_template(project, mjml=mjml, publish=True).published_version
    assert compiled_with_liquid(version.mjml, version.preheader, rendering.social_icon_origin()) is None
    vip, other = customers(project, 2)
    vip.traits = {**vip.traits, "vip": True}
    shown, hidden = queued(version, [vip, other])
    assert "See your order" in render_delivery(shown).html
    assert "See your order" not in render_delivery(hidden).html


def test_the_bytes_sent_are_the_bytes_django_would_send(project, platform_url):
    version = make_template(
        project, mjml=GUIDE_MJML, publish=True, from_name="Boutique Zoë",
        subject="Merci pour votre achat, {{ customer.name }} — une très longue ligne d'objet qui doit être pliée",
    ).published_version  # fmt: skip
    (person,) = customers(project, 1)
    (delivery,) = queued(version, [person])
    message = compose(delivery, render_delivery(delivery)).message()
    assert as_bytes(message) == message.as_bytes(linesep="\r\n")
    assert b"=?utf-8?" in as_bytes(message)  # the non-ASCII headers were encoded, by the Header class


class RefusingServer(SMTPServer):
    """Refuses one recipient, as a server does for an unknown mailbox."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == "c1@example.com":
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def refusing_server(settings):
    server = RefusingServer(host="127.0.0.1", port=_free_port())
    controller = Controller(server, hostname=server.host, port=server.port, server_hostname="localhost")
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = server.host, server.port, 10
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    try:
        yield server
    finally:
        controller.stop()


def test_a_refused_recipient_fails_alone_and_the_chunk_goes_on(project, refusing_server, platform_url):
    version = make_template(project, mjml=GUIDE_MJML, publish=True).published_version
    chunk = queued(version, customers(project, 3))
    assert deliveries_send(delivery_ids=[d.pk for d in chunk]) == 2
    refused = Delivery.objects.get(to_email="c1@example.com")
    assert refused.status == Delivery.Status.FAILED and "No such mailbox" in refused.error
    assert refused.sent_at is None and refused.message_id == ""
    assert [m.rcpt_tos for m in refusing_server.messages] == [["c0@example.com"], ["c2@example.com"]]
    assert set(Delivery.objects.exclude(pk=refused.pk).values_list("status", flat=True)) == {Delivery.Status.SENT}


def test_an_unreachable_server_leaves_the_chunk_queued_for_a_retry(project, settings, platform_url):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2  # nothing listens
    version = make_template(project, mjml=GUIDE_MJML, publish=True).published_version
    chunk = queued(version, customers(project, 2))
    with pytest.raises(ConnectionRefusedError):  # the task's autoretry takes it from here
        deliveries_send(delivery_ids=[d.pk for d in chunk])
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.QUEUED}


def test_the_html_part_goes_without_quoted_printable_and_only_breaks_lines_inside_layout_tags(
    project, smtp_server, platform_url
):
    version = make_template(project, mjml=GUIDE_MJML, publish=True).published_version
    (delivery,) = queued(version, customers(project, 1))
    rendered = render_delivery(delivery)
    assert max(len(line) for line in rendered.html.split("\n")) > 998  # mrml's one-line <body>
    deliveries_send(delivery_ids=[delivery.pk])

    mail = smtp_server.wait_for("c0@example.com")
    part = mail.message.get_body(preferencelist=("html",))
    assert part["Content-Transfer-Encoding"] in ("7bit", "8bit")
    assert max(len(line) for line in mail.html.splitlines()) <= 998
    # The same HTML but for a line break in place of the space after some tag names.
    sent = re.sub(r"<(table|tr|td|div)\n", r"<\1 ", mail.html.replace("\r\n", "\n"))
    assert sent.rstrip("\n") == rendered.html.rstrip("\n")  # tokens are the same each time they are made
