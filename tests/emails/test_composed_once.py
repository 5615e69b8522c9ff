"""A published version composed once for all its recipients (emails/composing.py), its emails the
ones the per-recipient path makes, byte for byte; the From policy re-checked when a version is sent;
the test-send allowance counted atomically."""

import re
import threading

import pytest
from django.core import signing
from django.core.cache import cache, caches
from django.db import connection
from django.test.utils import CaptureQueriesContext

from emails import composing, rendering, sender_policy, tracking
from emails.compiling import html_to_text
from emails.deliveries import Send, deliver_many
from emails.models import Delivery
from emails.rendering import render_delivery
from emails.sending import as_bytes, compose, deliveries_send, wire_bytes
from tests.factories import UserFactory

from .conftest import identify, make_template
from .test_send_chunks import GUIDE_MJML

TRICKY = [
    "Ada",
    'Ada "The Countess" <b>Lovelace</b> & co',
    "Tom & Jerry's &amp; &lt;tag&gt; &copy &notit; &#169",
    "Zoë 😀 日本語 café",
    "  two\n lines \r\n and\ttabs  ",
    "{{ customer.email }} {% if x %}",
    "",
    "nbsp\u00a0here\u2028line sep\u0085next",
    "private \ue000L0\ue001 \ue002 marks",
    "x" * 1200,
    "&",
    "a;b&c",
]

LINKS_MJML = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Hello {{ customer.name }},&amp; {{ customer.traits.plan | default: "free" }}</mj-text>
        <mj-text><a href="https://shop.example.com/a?x=1&amp;y=2">Shop {{ customer.name }}</a>
          <a href="https://shop.example.com/b">{{ event.properties.item }}</a>
          <a href="mailto:help@example.com">Write</a> <a href="#top">Top</a></mj-text>
        <mj-image href="https://shop.example.com/img" src="https://cdn.example.com/i.png" alt="Pic" />
        <mj-button href="https://shop.example.com/orders">See your order</mj-button>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""


def person(project, name, n=0):
    return identify(project, f"p{n}", {"email": f"p{n}@example.com", "name": name, "plan": name[:20]})


def the_old_way(delivery) -> rendering.RenderedEmail:
    """render_delivery as it was before plans: Liquid, compiling, links, text, per recipient."""
    source = delivery.template_version
    context = rendering.personalisation.render_context(delivery.customer, delivery.event)
    unsubscribe_url = tracking.unsubscribe_url(delivery.pk)
    context["unsubscribe_url"] = unsubscribe_url
    subject, preheader, html = rendering._personalise(source, context)
    html, text = rendering._finish(
        source, html, project_name=delivery.project.name, unsubscribe_url=unsubscribe_url,
        track_clicks=(lambda url: tracking.click_url(delivery.pk, url)) if source.track_clicks else None,
        open_pixel_url=tracking.open_url(delivery.pk) if source.track_opens else None,
    )  # fmt: skip
    return rendering.RenderedEmail(subject=subject, preheader=preheader, html=html, text=text)


@pytest.mark.parametrize("mjml", [GUIDE_MJML, LINKS_MJML], ids=["guide", "links"])
def test_the_composed_email_is_the_one_rendered_per_recipient_for_tricky_values(project, platform_url, mjml):
    version = make_template(project, mjml=mjml, publish=True).published_version
    assert composing.plan_for(version, project_name=project.name) is not None
    for n, name in enumerate(TRICKY):
        (delivery,) = deliver_many(
            [Send(version, person(project, name, n), event={"properties": {"item": f"{name} <Cap> & \"x\""}})]
        )
        delivery = Delivery.objects.get(pk=delivery.pk)
        context = rendering.personalisation.render_context(delivery.customer, delivery.event)
        context["unsubscribe_url"] = tracking.unsubscribe_url(delivery.pk)
        fast = composing.compose(
            composing.plan_for(version, project_name=project.name), delivery_id=delivery.pk, context=context,
            unsubscribe_url=context["unsubscribe_url"],
        )  # fmt: skip
        # Composed from the plan, but for a value holding the separator of the outputs' one render.
        assert (fast is not None) == ("\ue002" not in name), name
        assert render_delivery(delivery) == the_old_way(delivery), name


def test_the_text_part_from_the_plan_is_html_to_text_of_the_recipients_html(project, platform_url):
    version = make_template(project, mjml=LINKS_MJML, publish=True).published_version
    (delivery,) = deliver_many([Send(version, person(project, "Zoë & <Co>\nnew line"), event={})])
    rendered = render_delivery(Delivery.objects.get(pk=delivery.pk))
    without_pixel = re.sub(r'<img src="[^"]*/e/o/[^"]*"[^>]*>', "", rendered.html)
    assert rendered.text == html_to_text(without_pixel)
    assert "Shop Zoë & <Co> new line (http://platform.test/e/c/" in rendered.text
    assert "Unsubscribe (http://platform.test/e/u/" in rendered.text


def test_a_version_is_planned_once_for_all_its_recipients(project, smtp_server, platform_url, monkeypatch):
    version = make_template(project, mjml=GUIDE_MJML, publish=True).published_version
    parsed = []

    def counting_text_events(source):  # the real parser, counted
        parsed.append(source)
        return real_text_events(source)

    real_text_events = composing.text_events
    composing._plan.cache_clear()
    monkeypatch.setattr(composing, "text_events", counting_text_events)
    monkeypatch.setattr(rendering, "html_to_text", lambda source: pytest.fail("converted per recipient"))
    people = [identify(project, f"c{n}", {"email": f"c{n}@example.com", "name": f"C {n}"}) for n in range(8)]
    deliveries_send(delivery_ids=[d.pk for d in deliver_many([Send(version, p) for p in people])])

    assert len(parsed) == 1
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.SENT}
    tokens = set()
    for p in people:  # each its own links, pixel and unsubscribe header
        mail = smtp_server.wait_for(p.email)
        assert "Thank you for your purchase, " + p.traits["name"] + "!" in mail.html
        found = set(re.findall(r"/e/[ocu]/([^\"\s>]+)", mail.html))
        assert len(found) >= 3 and not found & tokens
        tokens |= found
        delivery = Delivery.objects.get(to_email=p.email)
        assert mail.message["List-Unsubscribe"].strip() == f"<{tracking.unsubscribe_url(delivery.pk)}>"
        assert mail.message["Message-ID"] == delivery.message_id


def test_an_output_inside_a_link_is_rendered_per_recipient(project, platform_url):
    alt = LINKS_MJML.replace('alt="Pic"', 'alt="Pic {{ customer.name }}"')  # in a tag, not in text
    in_alt = make_template(project, name="Alt", mjml=alt, publish=True).published_version
    assert composing.plan_for(in_alt, project_name=project.name) is None
    mjml = GUIDE_MJML.replace("https://shop.example.com/orders", "https://shop.example.com/orders/{{ customer.id }}")
    version = make_template(project, mjml=mjml, publish=True).published_version
    assert composing.plan_for(version, project_name=project.name) is None
    (delivery,) = deliver_many([Send(version, person(project, "Ada"))])
    rendered = render_delivery(Delivery.objects.get(pk=delivery.pk))
    token = re.search(r'href="http://platform.test/e/c/([^"]+)"', rendered.html).group(1)
    assert tracking.click_target(token)[1].startswith("https://shop.example.com/orders/p0?utm_source=timonier")


@pytest.mark.parametrize(
    ("from_name", "subject", "reply_to"),
    [
        ("Acme Shop", "Thanks {{ customer.name }}", "help@acme.example"),
        ("Boutique Zoë", "Merci {{ customer.name }} — une très longue ligne d'objet qui doit être pliée, oui", ""),
        ("", "A" * 150 + " {{ customer.name }}", ""),
    ],
)
def test_the_wire_bytes_are_the_bytes_of_the_email_message_composer(
    project, platform_url, from_name, subject, reply_to
):
    version = make_template(
        project, mjml=LINKS_MJML, publish=True, from_name=from_name, subject=subject, reply_to=reply_to
    ).published_version
    for n, name in enumerate(TRICKY):
        (delivery,) = deliver_many([Send(version, person(project, name, n))])
        delivery = Delivery.objects.get(pk=delivery.pk)
        rendered = render_delivery(delivery)
        old = as_bytes(compose(delivery, rendered).message())
        headers = old.split(b"\r\n\r\n", 1)[0].decode()
        date = re.search(r"^Date: ([^\r\n]*)", headers, re.MULTILINE).group(1)
        message_id = re.search(r"^Message-ID: ([^\r\n]*)", headers, re.MULTILINE).group(1)
        boundary = re.search(r'boundary="([^"]+)"', headers).group(1)
        new = wire_bytes(delivery, rendered, message_id=message_id, date=date, boundary=boundary)
        if len(name) > 998:  # the text part has a line too long for 8-bit: the email.message way
            assert new is None
            continue
        assert new == old, name


def test_click_tokens_are_the_ones_django_signs_and_they_still_verify(settings):
    settings.PLATFORM_URL = "http://platform.test"
    tracking._signer.cache_clear()
    url = "https://shop.example.com/orders?utm_source=timonier"
    token = tracking.click_url(7, url).rpartition("/")[2]
    assert token == signing.Signer(salt=tracking.CLICK_SALT).sign_object({"d": 7, "u": url}, compress=True)
    assert tracking.click_urls(7, [url]) == [tracking.click_url(7, url)]
    for n in (0, 7, 10**12, -3):
        assert tracking.open_url(n).rpartition("/")[2] == signing.Signer(salt=tracking.OPEN_SALT).sign_object(n)
        unsubscribe = signing.Signer(salt=tracking.UNSUBSCRIBE_SALT).sign_object(n)
        assert tracking.unsubscribe_url(n).rpartition("/")[2] == unsubscribe
        assert signing.Signer(salt=tracking.UNSUBSCRIBE_SALT).unsign_object(unsubscribe) == n
    settings.SECRET_KEY = "another-key-" * 4  # a key change makes other tokens
    assert tracking.click_url(7, url).rpartition("/")[2] != token


# --- The From policy at send time ----------------------------------------------------------------


def test_a_version_whose_from_domain_was_removed_is_skipped_with_the_reason(project, smtp_server, platform_url):
    version = make_template(project, mjml=GUIDE_MJML, publish=True, from_email="shop@acme.example").published_version
    still = deliver_many([Send(version, person(project, "Ada", 0))])
    project.sending_domains = []  # Settings → Sending domains: acme.example removed
    project.save(update_fields=["sending_domains"])

    (refused,) = deliver_many([Send(version, person(project, "Bob", 1))])

    assert refused.status == Delivery.Status.FAILED
    assert Delivery.objects.get(pk=refused.pk).error.startswith(
        "skipped: the From address shop@acme.example may no longer be used: acme.example is not a sending domain"
    )
    assert still[0].status == Delivery.Status.QUEUED  # made while it was allowed


def test_a_from_on_the_servers_own_domain_costs_no_query(project, platform_url, settings):
    settings.DEFAULT_FROM_EMAIL = "Timonier <noreply@timonier.example>"
    version = make_template(project, mjml=GUIDE_MJML, publish=True, from_email="news@timonier.example")
    version = version.published_version
    people = [person(project, f"P{n}", n) for n in range(3)]
    with CaptureQueriesContext(connection) as queries:
        deliveries = deliver_many([Send(version, p) for p in people])
    assert {d.status for d in deliveries} == {Delivery.Status.QUEUED}
    assert not [q for q in queries if "organizations_project" in q["sql"]]


# --- The test-send allowance, counted atomically ---------------------------------------------------


def test_test_sends_at_the_same_instant_are_counted_one_after_the_other(db):
    if "redis" not in type(caches["default"]).__module__:
        pytest.skip("cache.add is atomic on Redis (make test); the file cache of a quick run has no atomic add")
    cache.clear()
    user = UserFactory()
    start = threading.Barrier(3 * sender_policy.TEST_SENDS_PER_USER)
    results = []

    def attempt() -> None:
        start.wait(timeout=10)
        results.append(sender_policy.take_test_send(user=user))

    threads = [threading.Thread(target=attempt) for _ in range(3 * sender_policy.TEST_SENDS_PER_USER)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results.count(None) == sender_policy.TEST_SENDS_PER_USER
    assert len(results) == 3 * sender_policy.TEST_SENDS_PER_USER
    assert len(cache.get(f"emails:test-sends:{user.pk}")) == sender_policy.TEST_SENDS_PER_USER


# --- The header shortcuts, against Django's own functions -------------------------------------------


def test_a_short_ascii_subject_and_a_plain_address_come_out_as_django_makes_them():
    from email.header import Header
    from random import Random

    from django.core.mail.message import sanitize_address

    from emails import sending

    rng = Random(13)
    printable = "".join(chr(c) for c in range(32, 127)) + "é   "
    for _ in range(3000):
        subject = " ".join("".join(rng.choice(printable) for _ in range(rng.randint(0, 90))).split())
        if subject.isascii():
            django_way = sending._CRLF_POLICY.fold_binary("Subject", Header(subject).encode())
        else:
            django_way = sending._CRLF_POLICY.fold_binary("Subject", Header(subject, "utf-8").encode())
        assert sending._header("Subject", subject) == django_way, subject
    local = "abcXYZ019!#$%&'*+/=?^_`{|}~-.\"(),: "
    plain = 0
    for _ in range(3000):
        address = "".join(rng.choice(local) for _ in range(rng.randint(1, 12))) + "@"
        address += "".join(rng.choice("abZ09-.é") for _ in range(rng.randint(1, 12)))
        try:
            django_way = sanitize_address(address, "utf-8")
        except (ValueError, IndexError, TypeError) as exc:
            django_way = type(exc)
        try:
            ours = sending._envelope_recipient(address)
        except (ValueError, IndexError, TypeError) as exc:
            ours = type(exc)
        assert ours == django_way, address
        plain += bool(sending._PLAIN_ADDRESS_RE.match(address))
    assert plain > 100  # the shortcut was taken often enough to be tested
