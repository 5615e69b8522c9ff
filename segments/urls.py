from django.urls import path

from . import views

app_name = "segments"

project = "o/<slug:org_slug>/<slug:project_slug>/"
urlpatterns = [
    path(project + "segments", views.segment_list, name="segments"),
    path(project + "segments/new", views.segment_new, name="segment_new"),
    path(project + "segments/preview", views.segment_preview, name="segment_preview"),
    path(project + "segments/<int:pk>", views.segment_detail, name="segment"),
    path(project + "segments/<int:pk>/edit", views.segment_edit, name="segment_edit"),
    path(project + "segments/<int:pk>/delete", views.segment_delete, name="segment_delete"),
]
