"""Deliveries follow their customer: to the primary on a merge, anonymous after an erasure."""

from cdp.inbox import commands_enqueue
from cdp.messages import erasure_message, normalize
from emails.models import Delivery, Unsubscription
from emails.services import deliver
from timonier import clock

from .conftest import identify, make_template, process


def send(project, raw: dict) -> None:
    now = clock.now()
    commands_enqueue(project_id=project.pk, messages=[normalize(raw, received_at=now)], received_at=now)
    process(project)


def erase(project, customer_id: str) -> None:
    """What DELETE /v1/customers/{id} queues (cdp.api.customers._customer_erase)."""
    now = clock.now()
    message = erasure_message(customer_id, at=now)
    commands_enqueue(project_id=project.pk, messages=[message], received_at=now)
    process(project)


def test_a_merge_moves_the_deliveries_to_the_primary(project):
    version = make_template(project, publish=True).published_version
    primary = identify(project, "primary", {"email": "p@example.com"})
    secondary = identify(project, "secondary", {"email": "s@example.com"})
    delivery = deliver(version=version, customer=secondary)

    send(project, {"type": "merge", "primary": {"customer_id": "primary"}, "secondary": {"customer_id": "secondary"}})

    delivery.refresh_from_db()
    assert delivery.customer_id == primary.pk
    assert delivery.to_email == "s@example.com"  # where it was sent, as it was


def test_an_erasure_forgets_the_address_but_keeps_the_unsubscription(project):
    version = make_template(project, publish=True).published_version
    jane = identify(project, "user_001", {"email": "jane@example.com"})
    delivery = deliver(version=version, customer=jane)
    Unsubscription.objects.create(project=project, email="jane@example.com", customer=jane, at=clock.now())
    other = deliver(version=version, customer=identify(project, "user_002", {"email": "joe@example.com"}))

    erase(project, "user_001")

    delivery.refresh_from_db()
    assert (delivery.customer_id, delivery.to_email) == (None, "")
    assert Delivery.objects.get(pk=other.pk).to_email == "joe@example.com"
    assert Unsubscription.objects.filter(project=project, email="jane@example.com").exists()
