"""The Workflows API's paths, included in the CDP API's URL root (`timonier/urls_api.py`)."""

from django.urls import path

from . import api

urlpatterns = [
    path("v1/workflows", api.workflows, name="api-workflows"),
    # `str`, not `int`: a malformed id gets the API's 404 naming the field, and 405 still applies.
    path("v1/workflows/<str:workflow_id>", api.workflow_detail, name="api-workflow"),
    path("v1/workflows/<str:workflow_id>/activate", api.workflow_activate, name="api-workflow-activate"),
    path("v1/workflows/<str:workflow_id>/pause", api.workflow_pause, name="api-workflow-pause"),
    path("v1/workflows/<str:workflow_id>/resume", api.workflow_resume, name="api-workflow-resume"),
    path("v1/workflows/<str:workflow_id>/archive", api.workflow_archive, name="api-workflow-archive"),
    path("v1/workflows/<str:workflow_id>/runs", api.workflow_runs, name="api-workflow-runs"),
    path("v1/workflows/<str:workflow_id>/enrollments", api.workflow_enrollments, name="api-workflow-enrollments"),
    path("v1/workflows/<str:workflow_id>/metrics", api.workflow_metrics, name="api-workflow-metrics"),
    path("v1/customers/<str:customer_id>/runs", api.customer_runs, name="api-customer-runs"),
]
