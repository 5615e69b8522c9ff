"""The public endpoints: open pixel, click redirect, unsubscribe page and One-Click POST."""

import pytest
from django.test import Client

from cdp.models import Customer
from emails import tracking
from emails.models import Delivery, DeliveryClick, Unsubscription
from emails.services import deliver, send_test

from .conftest import identify, make_template, process, teammate


@pytest.fixture
def sent(project, platform_url):
    """A delivery of the published template to Ada, as sent."""
    template = make_template(project, publish=True)
    customer = identify(project, "ada", {"email": "ada@example.com", "name": "Ada"})
    delivery = deliver(version=template.published_version, customer=customer)
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.SENT)
    delivery.refresh_from_db()
    return delivery


def path(url: str) -> str:
    return url.split("http://platform.test", 1)[1]


def test_the_pixel_records_the_open_and_answers_a_gif(sent):
    client = Client()
    response = client.get(path(tracking.open_url(sent.pk)))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif" and response.content.startswith(b"GIF89a")
    assert "no-cache" in response["Cache-Control"]
    client.get(path(tracking.open_url(sent.pk)))
    sent.refresh_from_db()
    assert sent.status == Delivery.Status.OPENED and sent.open_count == 2 and sent.opened_at is not None


def test_a_click_is_recorded_then_redirected(sent):
    url = "https://shop.example.com/orders?id=7&utm_source=timonier"
    response = Client().get(path(tracking.click_url(sent.pk, url)))
    assert response.status_code == 302 and response["Location"] == url
    sent.refresh_from_db()
    assert sent.status == Delivery.Status.CLICKED and sent.click_count == 1
    assert sent.clicked_at is not None and sent.opened_at is not None
    assert list(DeliveryClick.objects.filter(delivery=sent).values_list("url", flat=True)) == [url]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # signature changed
        lambda token: ("A" if token[0] != "A" else "B") + token[1:],  # payload changed
        lambda token: "not-a-token",
    ],
)
def test_a_tampered_click_link_is_refused_never_redirected(sent, tamper):
    token = tracking.click_url(sent.pk, "https://shop.example.com/").rsplit("/", 1)[1]
    response = Client().get(f"/e/c/{tamper(token)}")
    assert response.status_code in (400, 404)
    assert "Location" not in response
    assert b"This link is not valid" in response.content
    assert not DeliveryClick.objects.exists()


def test_an_open_or_unsubscribe_token_is_no_click_token(sent):
    for url in (tracking.open_url(sent.pk), tracking.unsubscribe_url(sent.pk)):
        token = url.rsplit("/", 1)[1]
        response = Client().get(f"/e/c/{token}")
        assert response.status_code == 404 and "Location" not in response


def test_unsubscribe_page_asks_then_the_button_unsubscribes(sent):
    client = Client(enforce_csrf_checks=True)
    url = path(tracking.unsubscribe_url(sent.pk))
    page = client.get(url)
    assert page.status_code == 200
    assert b"Unsubscribe from Acme emails?" in page.content
    assert not Unsubscription.objects.exists()  # a GET (a link scanner) changes nothing

    done = client.post(url)
    assert done.status_code == 200 and b"You are unsubscribed" in done.content
    unsubscription = Unsubscription.objects.get()
    assert (unsubscription.email, unsubscription.customer, unsubscription.delivery) == (
        "ada@example.com",
        sent.customer,
        sent,
    )
    sent.refresh_from_db()
    assert sent.status == Delivery.Status.UNSUBSCRIBED and sent.unsubscribed_at is not None


def test_one_click_unsubscribe_marks_the_customer_and_later_sends_are_skipped(sent, project):
    client = Client(enforce_csrf_checks=True)
    url = path(tracking.unsubscribe_url(sent.pk))
    form = "application/x-www-form-urlencoded"
    response = client.post(url, "List-Unsubscribe=One-Click", content_type=form)
    assert response.status_code == 200 and response.content == b"Unsubscribed.\n"
    assert client.post(url, "List-Unsubscribe=One-Click", content_type=form).status_code == 200  # idempotent
    assert Unsubscription.objects.count() == 1

    process(project)  # the identify with `unsubscribed: true` goes through the CDP pipeline
    customer = Customer.objects.get(pk=sent.customer_id)
    assert customer.traits["unsubscribed"] is True

    later = deliver(version=sent.template_version, customer=customer)
    assert later.status == Delivery.Status.FAILED
    assert later.error == "skipped: the customer has unsubscribed"


def test_an_address_unsubscribed_is_skipped_for_another_customer_with_it(sent, project):
    tracking.unsubscribe_record(delivery=sent)
    twin = identify(project, "ada-2", {"email": "ADA@example.com"})
    assert deliver(version=sent.template_version, customer=twin).status == Delivery.Status.FAILED


def test_a_delivery_queued_before_the_unsubscription_is_not_sent(sent, project, smtp_server):
    queued = deliver(version=sent.template_version, customer=sent.customer)
    tracking.unsubscribe_record(delivery=sent)
    from emails.sending import delivery_send

    delivery_send(delivery_id=queued.pk)
    queued.refresh_from_db()
    assert queued.status == Delivery.Status.FAILED and "unsubscribed" in queued.error
    assert smtp_server.messages == []


def test_unsubscribing_from_a_test_send_records_the_address_only(project, platform_url):
    template = make_template(project)
    customer = identify(project, "ada", {"email": "ada@example.com"})
    teammate(project, "teammate@example.com")
    delivery = send_test(template=template, to_email="teammate@example.com", user=None, customer=customer)
    tracking.unsubscribe_record(delivery=delivery)
    unsubscription = Unsubscription.objects.get()
    assert unsubscription.email == "teammate@example.com" and unsubscription.customer is None
    other = make_template(project, name="Other", publish=True)
    assert deliver(version=other.published_version, customer=customer).status == Delivery.Status.QUEUED


def test_unsubscriptions_are_per_project(sent):
    from tests.factories import ProjectFactory

    tracking.unsubscribe_record(delivery=sent)
    other = ProjectFactory()
    template = make_template(other, publish=True)
    customer = identify(other, "ada", {"email": "ada@example.com"})
    assert deliver(version=template.published_version, customer=customer).status == Delivery.Status.QUEUED


def test_an_anonymous_customer_is_marked_through_their_anonymous_id(project, platform_url):
    from cdp.inbox import commands_enqueue
    from cdp.messages import normalize
    from timonier import clock

    now = clock.now()
    raw = {"type": "identify", "anonymous_id": "anon-1", "traits": {"email": "anon@example.com"}}
    commands_enqueue(project_id=project.pk, messages=[normalize(raw, received_at=now)], received_at=now)
    process(project)
    customer = Customer.objects.get(project=project, email="anon@example.com")
    template = make_template(project, publish=True)
    delivery = deliver(version=template.published_version, customer=customer)
    tracking.unsubscribe_record(delivery=delivery)
    process(project)
    customer.refresh_from_db()
    assert customer.traits["unsubscribed"] is True
