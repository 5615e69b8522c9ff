"""What the customer page (cdp) shows of emails, through `{% load emails_tags %}`: cdp's Python
code never imports emails."""

from django import template

from emails import selectors

register = template.Library()

# The customer page lists this many of the newest deliveries.
DELIVERIES_SHOWN = 20


@register.simple_tag(takes_context=True)
def customer_deliveries(context, customer) -> list:
    """The newest emails sent to the customer, in the page's project, with their clicks."""
    return list(selectors.customer_deliveries(context["request"].project, customer)[:DELIVERIES_SHOWN])
