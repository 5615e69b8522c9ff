"""URL root of the platform UI (:3010). It serves no API."""

from django.urls import include, path

urlpatterns = [
    path("", include("accounts.urls")),
    path("", include("organizations.urls")),
    path("", include("cdp.urls")),
    path("", include("emails.urls")),
    path("", include("emails.urls_tracking")),
    path("", include("segments.urls")),
    path("", include("workflows.urls")),
]
