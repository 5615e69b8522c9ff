from django.urls import path

from . import customers, ingest, traitly
from .openapi import openapi_yaml

CALLS = ("identify", "track", "page", "screen", "group", "alias", "merge")
SHORT = {"i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group", "a": "alias"}

urlpatterns = [
    *[path(f"v1/{kind}", ingest.single_call(kind), name=f"ingest-{kind}") for kind in CALLS],
    # analytics.js posts to short paths.
    *[path(f"v1/{short}", ingest.single_call(kind), name=f"ingest-{short}") for short, kind in SHORT.items()],
    path("v1/batch", ingest.batch, name="ingest-batch"),
    path("v1/b", ingest.batch, name="ingest-b"),
    path("v1/customers", customers.customers_list, name="customers"),
    path("v1/customers/<str:customer_id>", customers.customer_detail, name="customer"),
    path("v1/customers/<str:customer_id>/events", customers.customer_events, name="customer-events"),
    # Traitly, for customers migrating from it.
    path("api/v1/customer", traitly.customer, name="traitly-customer"),
    path("api/v1/event", traitly.event, name="traitly-event"),
    path("api/event", traitly.event, name="traitly-event-short"),
    path("v1/openapi.yaml", openapi_yaml, name="openapi"),
]
