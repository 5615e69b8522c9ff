from django.conf import settings
from django.urls import path

from . import views

app_name = "emails"

project = "o/<slug:org_slug>/<slug:project_slug>/"
template = project + "email-templates/<int:pk>"
urlpatterns = [
    path(project + "email-templates", views.template_list, name="templates"),
    path(project + "email-templates/new", views.template_new, name="template_new"),
    path(template, views.template_detail, name="template"),
    path(template + "/preview", views.template_preview, name="template_preview"),
    path(template + "/send-test", views.template_send_test, name="template_send_test"),
    path(template + "/publish", views.template_publish, name="template_publish"),
    path(template + "/designer", views.designer, name="designer"),
    path(template + "/design", views.design_save, name="design_save"),
    path(project + "email-images", views.image_upload, name="image_upload"),
    # The uploaded images, public: email clients load them without a Timonier session.
    path(settings.MEDIA_URL.lstrip("/") + f"{views.IMAGES_FOLDER}/<path:path>", views.email_image, name="image"),
]
