"""Public URLs of the emails (no login): open pixel, click redirect, unsubscribe."""

from django.urls import path

from . import tracking_views

app_name = "emails_tracking"

urlpatterns = [
    path("e/o/<str:token>", tracking_views.open_pixel, name="open"),
    path("e/c/<str:token>", tracking_views.click, name="click"),
    path("e/u/<str:token>", tracking_views.unsubscribe, name="unsubscribe"),
]
