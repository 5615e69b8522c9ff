"""The customer page lists the emails sent to the customer, with their opens and clicks."""

import html

from emails import tracking
from emails.services import deliver

from .conftest import identify, make_template


def page(client, project, customer) -> str:
    response = client.get(f"/o/{project.organization.slug}/{project.slug}/customers/{customer.pk}")
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_customer_page_shows_deliveries_with_opens_and_clicks(personas):
    project = personas.project
    version = make_template(project, publish=True).published_version
    jane = identify(project, "user_001", {"email": "jane@example.com", "name": "Jane Doe"})
    delivery = deliver(version=version, customer=jane)
    tracking.open_record(delivery=delivery)
    tracking.open_record(delivery=delivery)
    tracking.click_record(delivery=delivery, url="https://shop.example.com/orders?id=7")

    shown = page(personas.client("member"), project, jane)

    assert 'data-testid="deliveries"' in shown
    assert "Purchase Thank You" in shown and "v1" in shown
    row = shown[shown.index(f'data-delivery-id="{delivery.pk}"') :].split("</tr>")[0]
    assert "Clicked" in row
    assert "<td>2" in row  # two opens
    assert "https://shop.example.com/orders?id=7" in row


def test_customer_page_without_emails_says_so(personas):
    jane = identify(personas.project, "user_001", {"email": "jane@example.com"})
    assert "No emails sent to this customer yet." in page(personas.client("member"), personas.project, jane)


def test_unsubscribed_trait_is_shown(personas):
    jane = identify(personas.project, "user_001", {"email": "jane@example.com", "unsubscribed": True})
    assert '<span class="badge danger">unsubscribed</span>' in page(personas.client("member"), personas.project, jane)
