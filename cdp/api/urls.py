from django.urls import path

from . import customers, ingest
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
    path("v1/openapi.yaml", openapi_yaml, name="openapi"),
]
