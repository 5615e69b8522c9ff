"""The Segments API's paths, included in the CDP API's URL root (`timonier/urls_api.py`)."""

from django.urls import path

from . import api

urlpatterns = [
    path("v1/segments", api.segments, name="api-segments"),
    # `str`, not `int`: a malformed id gets the API's 404 naming the field, and 405 still applies.
    path("v1/segments/<str:segment_id>", api.segment_detail, name="api-segment"),
    path("v1/segments/<str:segment_id>/members", api.segment_members, name="api-segment-members"),
]
