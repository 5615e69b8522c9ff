from django.urls import path

from . import views

app_name = "workflows"

project = "o/<slug:org_slug>/<slug:project_slug>/"
workflow = project + "workflows/<int:pk>"
urlpatterns = [
    path(project + "workflows", views.workflow_list, name="workflows"),
    path(project + "workflows/new", views.workflow_new, name="workflow_new"),
    path(project + "workflows/webhook-test", views.webhook_test, name="webhook_test"),
    path(project + "workflows/attention", views.runs_attention, name="runs_attention"),
    path(project + "workflows/runs/<int:pk>/action", views.run_action, name="run_action"),
    path(workflow, views.workflow_detail, name="workflow"),
    path(workflow + "/builder", views.workflow_builder, name="builder"),
    path(workflow + "/definition", views.definition_save, name="definition_save"),
    path(workflow + "/activate", views.workflow_activate, name="activate"),
    path(workflow + "/pause", views.workflow_pause, name="pause"),
    path(workflow + "/resume", views.workflow_resume, name="resume"),
    path(workflow + "/archive", views.workflow_archive, name="archive"),
    path(workflow + "/delete", views.workflow_delete, name="delete"),
]
