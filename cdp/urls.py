from django.urls import path

from . import views

app_name = "cdp"

project = "o/<slug:org_slug>/<slug:project_slug>/"
urlpatterns = [
    path(project + "customers", views.customer_list, name="customers"),
    # By primary key: external ids may hold characters that are awkward in a URL (`+`, `:`, `@`).
    path(project + "customers/<int:pk>", views.customer_detail, name="customer"),
    path(project + "events/latest", views.events_latest, name="events_latest"),
]
