from django.urls import path

from . import views

app_name = "organizations"

# Organization-level pages live under /o/<org>/-/…: "-" can never be a project slug.
project = "o/<slug:org_slug>/<slug:project_slug>/"
urlpatterns = [
    path("", views.selector, name="selector"),
    path("organizations/new", views.organization_new, name="organization_new"),
    path("invitations/<str:token>", views.invitation, name="invitation"),
    path("o/<slug:org_slug>/-/new-project", views.project_new, name="project_new"),
    path("o/<slug:org_slug>/-/members", views.members, name="members"),
    path("o/<slug:org_slug>/-/members/<int:pk>/remove", views.membership_remove, name="membership_remove"),
    path("o/<slug:org_slug>/-/invitations/<int:pk>/revoke", views.invitation_revoke, name="invitation_revoke"),
    path(project, views.dashboard, name="dashboard"),
    path(project + "api-keys", views.api_key_list, name="api_keys"),
    path(project + "api-keys/new", views.api_key_new, name="api_key_new"),
    path(project + "api-keys/<int:pk>/created", views.api_key_created, name="api_key_created"),
    path(project + "api-keys/<int:pk>/revoke", views.api_key_revoke, name="api_key_revoke"),
    path(project + "settings", views.project_settings, name="project_settings"),
]
