"""Platform pages of email templates: the list, a template's settings, preview, test send, publishing
and history, the designer, and the endpoints the designer calls (save, image upload)."""

import difflib
import json
import posixpath
import re
import uuid
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_POST
from django.views.static import serve

from cdp import selectors as cdp_selectors
from organizations.scoping import project_view

from . import selectors, services
from .forms import ImageUploadForm, SendTestForm, TemplateCreateForm, TemplateSettingsForm
from .models import EmailTemplate

PREVIEW_CUSTOMER_MATCHES = 10
# The email preview and the designer load nothing from outside Timonier, whatever a design holds
# (designer.js already switches off every third-party URL of GrapesJS and its MJML plugin; these
# are the backstop). The designer's canvas iframe inherits its rules. Inline styles: GrapesJS and
# MJML's HTML are full of them. The preview runs no script at all, and is a sandbox even opened on
# its own (not only in the page's sandboxed iframe): no forms, no base URL to redirect its links.
PREVIEW_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; font-src 'self' data:; "
    "sandbox; form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
)
DESIGNER_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; script-src 'self'; connect-src 'self'"
)


# The networks with an icon in emails/static/emails/social/ (`<name>.png`).
SOCIAL_ICONS = sorted(path.stem for path in (Path(__file__).parent / "static/emails/social").glob("*.png"))


TAG_BOUNDARY_RE = re.compile(r">\s*<")


IMAGES_FOLDER = "email-images"  # in the default storage: <IMAGES_FOLDER>/<project id>/<uuid>.<ext>


def image_folder(project) -> str:
    return f"{IMAGES_FOLDER}/{project.pk}"


def _template_or_404(request: HttpRequest, pk: int) -> EmailTemplate:
    try:
        return selectors.template_get(request.project, pk)
    except EmailTemplate.DoesNotExist:
        raise Http404("No such email template in this project") from None


def _url(request: HttpRequest, name: str, *args) -> str:
    return reverse(f"emails:{name}", args=[request.organization.slug, request.project.slug, *args])


# How the services' error keys read on the page.
FIELD_LABELS = {
    **{name: str(field.label) for name, field in TemplateSettingsForm.base_fields.items()},
    "mjml": "Design",
    "design": "Design",
    "customer": "Customer",
    "to_email": "Send test to",
    "name": "Name",
}


def _validation_messages(exc: ValidationError) -> list[str]:
    """Each message of a service's ValidationError, after the label of the field it is about."""
    if hasattr(exc, "error_dict"):
        return [
            f"{FIELD_LABELS.get(field, field)}: {message}"
            for field, errors in exc.message_dict.items()
            for message in errors
        ]
    return list(exc.messages)


@project_view()
@require_GET
def template_list(request: HttpRequest) -> HttpResponse:
    return render(request, "emails/template_list.html", {"templates": selectors.templates_list(request.project)})


@project_view()
def template_new(request: HttpRequest) -> HttpResponse:
    form = TemplateCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            template = services.template_create(
                project=request.project, name=form.cleaned_data["name"], user=request.user
            )
        except ValidationError as exc:
            for message in exc.messages:
                form.add_error("name", message)
        else:
            return redirect(_url(request, "template", template.pk))
    return render(request, "emails/template_new.html", {"form": form})


def _body_lines(mjml: str) -> list[str]:
    """MJML one tag per line: the designer writes it on one line, which would diff as a whole."""
    return [line for line in TAG_BOUNDARY_RE.sub(">\n<", mjml).splitlines() if line.strip()]


def _version_diffs(versions: list) -> list[tuple]:
    """Each version (newest first) with the unified diff of its subject and body against the one before."""
    ordered = sorted(versions, key=lambda version: version.number)
    rows = []
    for previous, version in zip([None, *ordered], ordered, strict=False):
        if previous is None:
            rows.append((version, []))
            continue
        before, after = f"v{previous.number}", f"v{version.number}"
        lines = list(
            difflib.unified_diff(
                [f"Subject: {previous.subject}"], [f"Subject: {version.subject}"], before, after, lineterm="", n=0
            )
        )
        lines += difflib.unified_diff(
            _body_lines(previous.mjml), _body_lines(version.mjml), f"{before} body", f"{after} body", lineterm=""
        )
        rows.append((version, lines))
    return list(reversed(rows))


def _customer(request: HttpRequest, customer_id: str):
    """The project's customer with this id; None for none given; 404 for a bad or foreign id."""
    if not customer_id:
        return None
    customer = None
    if customer_id.isascii() and customer_id.isdigit():
        customer = cdp_selectors.customer_get(request.project, int(customer_id))
    if customer is None:
        raise Http404("No such customer in this project")
    return customer


def _detail(request: HttpRequest, template: EmailTemplate, **forms) -> HttpResponse:
    search = request.GET.get("q", "").strip()
    matches = []
    if search:
        matches, _ = cdp_selectors.customers_list(request.project, limit=PREVIEW_CUSTOMER_MATCHES, search=search)
    customer = _customer(request, request.GET.get("customer", "") or request.POST.get("customer", ""))
    preview_url = _url(request, "template_preview", template.pk)
    if customer is not None:
        preview_url += f"?customer={customer.pk}"
    context = {
        "template": template,
        "settings_form": forms.get("settings_form") or TemplateSettingsForm.for_template(template),
        "send_test_form": forms.get("send_test_form") or SendTestForm(initial={"to_email": request.user.email}),
        "publish_errors": forms.get("publish_errors") or [],
        "versions": _version_diffs(selectors.template_versions(request.project, template)),
        "search": search,
        "matches": matches,
        "preview_customer": customer,
        "preview_url": preview_url,
    }
    return render(request, "emails/template_detail.html", context, status=forms.get("status", 200))


@project_view()
def template_detail(request: HttpRequest, pk: int) -> HttpResponse:
    template = _template_or_404(request, pk)
    if request.method != "POST":
        return _detail(request, template)
    form = TemplateSettingsForm.for_template(template, data=request.POST)
    if form.is_valid():
        try:
            services.template_update_settings(template=template, **form.cleaned_data)
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for field, errors in exc.message_dict.items():
                    for message in errors:
                        form.add_error(field if field in form.fields else None, message)
            else:
                form.add_error(None, exc)
        else:
            messages.success(request, "Settings saved.")
            return redirect(_url(request, "template", template.pk))
    return _detail(request, template, settings_form=form, status=400)


@project_view()
@require_GET
@xframe_options_sameorigin
def template_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """The email as a customer of the project (`?customer=<id>`) or the sample customer would get it."""
    template = _template_or_404(request, pk)
    customer = _customer(request, request.GET.get("customer", ""))
    try:
        rendered = services.render_email(source=template, customer=customer)
    except ValidationError as exc:
        response = render(request, "emails/preview_error.html", {"errors": _validation_messages(exc)})
    else:
        response = HttpResponse(rendered.html)
    response["Content-Security-Policy"] = PREVIEW_CSP
    return response


@project_view()
@require_POST
def template_send_test(request: HttpRequest, pk: int) -> HttpResponse:
    template = _template_or_404(request, pk)
    customer = _customer(request, request.POST.get("customer", ""))
    form = SendTestForm(request.POST)
    if form.is_valid():
        to_email = form.cleaned_data["to_email"]
        try:
            services.send_test(template=template, to_email=to_email, user=request.user, customer=customer)
        except ValidationError as exc:
            by_field = exc.error_dict if hasattr(exc, "error_dict") else {"to_email": exc.error_list}
            for field, errors in by_field.items():
                for message in ValidationError(errors).messages:
                    form.add_error(
                        "to_email", message if field == "to_email" else f"{FIELD_LABELS.get(field, field)}: {message}"
                    )
        else:
            messages.success(request, f"Test email to {to_email} queued: it arrives within seconds.")
            return redirect(_url(request, "template", template.pk))
    return _detail(request, template, send_test_form=form, status=400)


@project_view()
@require_POST
def template_publish(request: HttpRequest, pk: int) -> HttpResponse:
    template = _template_or_404(request, pk)
    try:
        version = services.template_publish(template=template, user=request.user)
    except ValidationError as exc:
        # The settings' own errors also go under their fields (a missing subject, a Liquid error).
        settings_form = TemplateSettingsForm(data=TemplateSettingsForm.for_template(template).initial)
        settings_form.is_valid()
        for field, errors in getattr(exc, "error_dict", {}).items():
            if field in settings_form.fields:
                for message in ValidationError(errors).messages:
                    settings_form.add_error(field, message)
        return _detail(
            request, template, publish_errors=_validation_messages(exc), settings_form=settings_form, status=400
        )
    messages.success(request, f"Published version {version.number}.")
    return redirect(_url(request, "template", template.pk))


def _project_images(request: HttpRequest) -> list[str]:
    try:
        _, files = default_storage.listdir(image_folder(request.project))
    except FileNotFoundError:
        return []
    folder = image_folder(request.project)
    return [request.build_absolute_uri(default_storage.url(f"{folder}/{name}")) for name in sorted(files)]


@project_view()
@require_GET
def designer(request: HttpRequest, pk: int) -> HttpResponse:
    template = _template_or_404(request, pk)
    config = {
        "design": template.design or {},
        "saveUrl": _url(request, "design_save", template.pk),
        "uploadUrl": _url(request, "image_upload"),
        "assets": _project_images(request),
        # Absolute: the same URLs end up in the email, which is read far from this page.
        "placeholderSrc": request.build_absolute_uri(static("emails/img/placeholder.png")),
        "socialIconBase": request.build_absolute_uri(static("emails/social/")),
        "socialIcons": SOCIAL_ICONS,
    }
    response = render(request, "emails/designer.html", {"template": template, "config": config})
    response["Content-Security-Policy"] = DESIGNER_CSP
    return response


def _json_error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": "bad_request", "message": message}, status=status)


@project_view()
@require_POST
def design_save(request: HttpRequest, pk: int) -> HttpResponse:
    """What the designer's Save posts: `{"design": <project data>, "mjml": "<mjml>…"}`; answers the problems."""
    template = _template_or_404(request, pk)
    try:
        body = request.body  # at most DATA_UPLOAD_MAX_MEMORY_SIZE (images are URLs, not inline data)
    except RequestDataTooBig:
        limit = filesizeformat(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return _json_error(413, f"design: the design is over the limit of {limit}; nothing was saved")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _json_error(400, "body: not JSON")
    if not isinstance(payload, dict):
        return _json_error(400, "body: must be an object with design and mjml")
    design, mjml = payload.get("design"), payload.get("mjml")
    if not isinstance(design, dict):
        return _json_error(400, "design: must be an object (the editor's project data)")
    if not isinstance(mjml, str):
        return _json_error(400, "mjml: must be a string")
    problems = services.template_save_design(template=template, design=design, mjml=mjml)
    return JsonResponse({"saved": True, "problems": [str(problem) for problem in problems]})


@project_view()
@require_POST
def image_upload(request: HttpRequest) -> HttpResponse:
    """GrapesJS's asset manager upload: images only, stored under `email-images/<project id>/`.

    All or nothing: one refused file stores none. Answers `{"data": [url, …]}` as GrapesJS expects.
    """
    uploads = request.FILES.getlist("files")
    if not uploads:
        return JsonResponse({"errors": ["files: no file was sent"]}, status=400)
    forms = [ImageUploadForm(files={"file": upload}) for upload in uploads]
    errors = [f"files: {message}" for form in forms if not form.is_valid() for message in form.errors["file"]]
    if errors:
        return JsonResponse({"errors": errors}, status=400)
    urls = []
    for form in forms:
        upload = form.cleaned_data["file"]
        name = posixpath.join(image_folder(request.project), f"{uuid.uuid4().hex}.{upload.image_kind}")
        stored = default_storage.save(name, upload)
        urls.append(request.build_absolute_uri(default_storage.url(stored)))
    return JsonResponse({"data": urls})


@require_GET
def email_image(request: HttpRequest, path: str) -> HttpResponse:
    """An uploaded email image, served by Timonier itself (`make run` has no other web server).

    Only the images folder of MEDIA_ROOT is public, and `serve` refuses paths that leave it.
    """
    return serve(request, path, document_root=Path(settings.MEDIA_ROOT) / IMAGES_FOLDER)
