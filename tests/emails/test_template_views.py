"""The email template pages and the designer's endpoints, through the Django test client."""

import html
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from cdp.models import Customer
from emails import forms as email_forms
from emails import services
from emails.models import Delivery, EmailTemplate
from tests.conftest import signed_in_client
from timonier import clock

pytestmark = pytest.mark.django_db

MJML = (
    "<mjml><mj-body><mj-section><mj-column>"
    "<mj-text>Thank you for your purchase, {{ customer.name | default: 'friend' }}!</mj-text>"
    "</mj-column></mj-section></mj-body></mjml>"
)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def url(project, path=""):
    return f"/o/{project.organization.slug}/{project.slug}/{path}"


def make_template(project, name="Purchase Thank You", *, subject: str | None = "Thanks!", mjml=MJML, user=None):
    template = services.template_create(project=project, name=name, user=user)
    if subject is not None:  # "" clears the subject a new template starts with (its name)
        settings_values = {name: getattr(template, name) for name in email_forms.TemplateSettingsForm.FIELDS}
        services.template_update_settings(template=template, **{**settings_values, "subject": subject})
    if mjml:
        services.template_save_design(template=template, design={"pages": []}, mjml=mjml)
    template.refresh_from_db()
    return template


def make_customer(project, email, name=""):
    now = clock.now()
    return Customer.objects.create(
        project=project,
        external_id=email.split("@")[0],
        traits={"email": email, "name": name},
        email=email,
        name=name,
        first_seen_at=now,
        last_seen_at=now,
    )


def settings_post(**overrides):
    data = {
        "subject": "Thanks for your order",
        "preheader": "It ships tomorrow",
        "from_name": "Shop",
        "from_email": "",
        "reply_to": "help@example.com",
        "utm_source": "timonier",
        "utm_medium": "email",
        "utm_campaign": "thanks",
        "utm_content": "",
        "track_opens": "on",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


# --- List and creation ------------------------------------------------------------------------


def test_list_shows_each_template_with_its_status(personas):
    published = make_template(personas.project, "Welcome")
    services.template_publish(template=published, user=personas.owner)
    make_template(personas.project, "Purchase Thank You")

    response = personas.client("member").get(url(personas.project, "email-templates"))

    assert response.status_code == 200
    rows = re.findall(r'<tr data-template-id="\d+">(.*?)</tr>', response.content.decode(), re.DOTALL)
    assert "Purchase Thank You" in rows[0] and "Draft" in rows[0] and "Never" in rows[0]
    assert "Welcome" in rows[1] and "Published" in rows[1] and "v1" in rows[1]


def test_sidebar_links_email_templates(personas):
    response = personas.client("member").get(url(personas.project, "customers"))

    assert f'href="{url(personas.project, "email-templates")}"' in response.content.decode()


def test_new_template_creates_it_and_opens_its_page(personas):
    client = personas.client("member")

    response = client.post(url(personas.project, "email-templates/new"), {"name": "Purchase Thank You"})

    template = EmailTemplate.objects.get(project=personas.project)
    assert template.name == "Purchase Thank You"
    assert template.created_by == personas.member
    assert response.status_code == 302
    assert response["Location"] == url(personas.project, f"email-templates/{template.pk}")
    page = client.get(response["Location"]).content.decode()
    assert "Open Designer" in page and "Publish" in page


def test_new_template_with_a_taken_name_shows_the_error_under_name(personas):
    make_template(personas.project, "Welcome")

    response = personas.client("member").post(url(personas.project, "email-templates/new"), {"name": "Welcome"})

    assert response.status_code == 200
    assert re.search(r'id="id_name-errors"><li>A template with this name already exists', response.content.decode())
    assert EmailTemplate.objects.filter(project=personas.project).count() == 1


def test_new_template_without_a_name_shows_the_error_under_name(personas):
    response = personas.client("member").post(url(personas.project, "email-templates/new"), {"name": "  "})

    assert 'id="id_name-errors"' in response.content.decode()
    assert not EmailTemplate.objects.exists()


# --- Detail: settings, preview, send test, publish, history -----------------------------------


def test_settings_form_saves_every_field(personas):
    template = make_template(personas.project)
    client = personas.client("member")

    response = client.post(url(personas.project, f"email-templates/{template.pk}"), settings_post())

    assert response.status_code == 302
    template.refresh_from_db()
    assert (template.subject, template.preheader, template.from_name) == (
        "Thanks for your order",
        "It ships tomorrow",
        "Shop",
    )
    assert (template.from_email, template.reply_to) == ("", "help@example.com")
    assert (template.utm_source, template.utm_medium, template.utm_campaign) == ("timonier", "email", "thanks")
    assert (template.track_opens, template.track_clicks) == (True, False)


def test_settings_with_a_bad_address_show_the_error_under_it_and_change_nothing(personas):
    template = make_template(personas.project, subject="Before")

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}"),
        settings_post(subject="After", from_email="not an address"),
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert re.search(r'id="id_from_email-errors"><li>Enter a valid email address', page)
    assert 'value="After"' in page  # what was typed is kept
    template.refresh_from_db()
    assert template.subject == "Before"


def test_preview_renders_the_email_for_sample_data(personas):
    template = make_template(personas.project)

    response = personas.client("member").get(url(personas.project, f"email-templates/{template.pk}/preview"))

    assert response.status_code == 200
    assert "Thank you for your purchase, Jane Doe!" in response.content.decode()
    assert "default-src 'none'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "SAMEORIGIN"


def test_preview_renders_for_a_customer_of_the_project(personas):
    template = make_template(personas.project)
    customer = make_customer(personas.project, "ada@example.com", "Ada Lovelace")

    response = personas.client("member").get(
        url(personas.project, f"email-templates/{template.pk}/preview?customer={customer.pk}")
    )

    assert "Thank you for your purchase, Ada Lovelace!" in response.content.decode()


def test_preview_of_another_projects_customer_is_404(personas):
    template = make_template(personas.project)
    foreign = make_customer(personas.other_project, "eve@example.com", "Eve")

    response = personas.client("member").get(
        url(personas.project, f"email-templates/{template.pk}/preview?customer={foreign.pk}")
    )

    assert response.status_code == 404


def test_preview_with_a_liquid_error_names_the_problem(personas):
    template = make_template(personas.project, mjml=MJML.replace("Thank you", "{% if %}Thank you"))

    response = personas.client("member").get(url(personas.project, f"email-templates/{template.pk}/preview"))

    assert response.status_code == 200
    assert "cannot be rendered" in response.content.decode()


def test_detail_finds_customers_by_email_for_the_preview(personas):
    template = make_template(personas.project)
    customer = make_customer(personas.project, "ada@example.com", "Ada Lovelace")
    make_customer(personas.other_project, "ada@example.org", "Other Ada")

    page = (
        personas.client("member").get(url(personas.project, f"email-templates/{template.pk}?q=ada@")).content.decode()
    )

    assert f'href="?customer={customer.pk}#preview"' in page
    assert "ada@example.org" not in page


def test_send_test_queues_a_test_delivery(personas):
    template = make_template(personas.project)

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}/send-test"), {"to_email": personas.member.email}
    )

    assert response.status_code == 302
    delivery = Delivery.objects.get(template=template)
    assert (delivery.to_email, delivery.kind, delivery.template_version) == (personas.member.email, "test", None)


def test_send_test_to_a_bad_address_shows_the_error_under_it(personas):
    template = make_template(personas.project)

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}/send-test"), {"to_email": "nope"}
    )

    assert response.status_code == 400
    assert re.search(r'id="id_to_email-errors"><li>Enter a valid email address', response.content.decode())
    assert not Delivery.objects.exists()


def test_publish_without_a_subject_shows_the_services_errors(personas):
    template = make_template(personas.project, subject="")

    response = personas.client("member").post(url(personas.project, f"email-templates/{template.pk}/publish"))

    assert response.status_code == 400
    page = response.content.decode()
    assert "Subject: A subject is required to publish." in page
    assert re.search(r'id="id_subject-errors"><li>A subject is required to publish.', page)
    assert not template.versions.exists()


def test_publish_with_a_liquid_error_names_the_line(personas):
    template = make_template(personas.project, mjml=MJML.replace("<mj-text>", "<mj-text>\n{{ customer.name | }}"))

    response = personas.client("member").post(url(personas.project, f"email-templates/{template.pk}/publish"))

    assert response.status_code == 400
    assert re.search(r"Design: Liquid error on line 2", response.content.decode())


def test_history_lists_versions_with_the_diff_between_them(personas):
    template = make_template(personas.project, subject="First subject")
    services.template_publish(template=template, user=personas.owner)
    services.template_save_design(template=template, design={}, mjml=MJML.replace("Thank you", "Many thanks"))
    client = personas.client("member")
    client.post(url(personas.project, f"email-templates/{template.pk}"), settings_post(subject="Second subject"))

    response = client.post(url(personas.project, f"email-templates/{template.pk}/publish"))

    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert re.search(r"<td>v2</td><td>" + re.escape(personas.member.email), page)
    assert re.search(r"<td>v1</td><td>" + re.escape(personas.owner.email), page)
    assert '<span class="del">-Subject: First subject</span>' in page
    assert '<span class="add">+Subject: Second subject</span>' in page
    body_diff = html.unescape(page)
    assert "-<mj-text>Thank you for your purchase, {{ customer.name | default: 'friend' }}!</mj-text>" in body_diff
    assert "+<mj-text>Many thanks for your purchase, {{ customer.name | default: 'friend' }}!</mj-text>" in body_diff
    assert "+<mj-section>" not in body_diff  # only the changed line


# --- Designer ---------------------------------------------------------------------------------


def test_designer_page_carries_the_saved_design_and_loads_only_local_files(personas):
    template = make_template(personas.project)
    design = {"pages": [{"id": "p1", "frames": []}], "assets": [], "styles": [], "symbols": [], "dataSources": []}
    services.template_save_design(template=template, design=design, mjml=MJML)

    response = personas.client("member").get(url(personas.project, f"email-templates/{template.pk}/designer"))

    assert response.status_code == 200
    page = response.content.decode()
    config_json = re.search(r'<script id="designer-config" type="application/json">(.*?)</script>', page).group(1)
    config = json.loads(config_json)
    assert config["design"] == design
    assert config["saveUrl"] == url(personas.project, f"email-templates/{template.pk}/design")
    assert "/static/emails/vendor/grapesjs-0.23.6/grapes.min.js" in page
    assert "/static/emails/vendor/grapesjs-mjml-1.0.8/index.js" in page
    assert not re.search(r'(src|href)="https?://', page)
    assert "default-src 'self'" in response["Content-Security-Policy"]


def test_save_stores_the_design_and_mjml_and_answers_no_problems(personas):
    template = make_template(personas.project, mjml="")
    design = {"pages": [{"id": "x"}], "styles": []}

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}/design"),
        json.dumps({"design": design, "mjml": MJML}),
        content_type="application/json",
    )

    assert response.status_code == 200
    assert response.json()["problems"] == []
    template.refresh_from_db()
    assert (template.design, template.mjml) == (design, MJML)


def test_save_answers_the_liquid_problems_with_their_line(personas):
    template = make_template(personas.project, mjml="")
    bad = MJML.replace("<mj-text>", "<mj-text>\n{% for x in %}")

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}/design"),
        json.dumps({"design": {}, "mjml": bad}),
        content_type="application/json",
    )

    assert response.status_code == 200
    [problem] = response.json()["problems"]
    assert problem.startswith("Liquid error on line 2")
    template.refresh_from_db()
    assert template.mjml == bad  # saved all the same: nothing typed is lost


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "body: not JSON"),
        ("[]", "body: must be an object with design and mjml"),
        (json.dumps({"design": [], "mjml": ""}), "design: must be an object"),
        (json.dumps({"design": {}, "mjml": 5}), "mjml: must be a string"),
    ],
)
def test_save_refuses_malformed_bodies_naming_the_field(personas, body, message):
    template = make_template(personas.project)

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}/design"), body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["message"].startswith(message)
    template.refresh_from_db()
    assert template.mjml == MJML


def test_save_over_the_size_limit_is_refused_with_a_message_and_changes_nothing(personas, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    template = make_template(personas.project)

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}/design"),
        json.dumps({"design": {"big": "x" * 2000}, "mjml": ""}),
        content_type="application/json",
    )

    assert response.status_code == 413
    assert response.json()["message"] == "design: the design is over the limit of 1000\xa0bytes; nothing was saved"
    template.refresh_from_db()
    assert template.mjml == MJML


def test_save_is_csrf_protected(personas):
    template = make_template(personas.project, mjml="")
    client = signed_in_client(personas.member)
    client.handler.enforce_csrf_checks = True
    save_url = url(personas.project, f"email-templates/{template.pk}/design")
    body = json.dumps({"design": {}, "mjml": MJML})

    refused = client.post(save_url, body, content_type="application/json")
    designer = client.get(url(personas.project, f"email-templates/{template.pk}/designer")).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', designer).group(1)
    accepted = client.post(save_url, body, content_type="application/json", headers={"X-CSRFToken": token})

    assert refused.status_code == 403
    assert accepted.status_code == 200
    template.refresh_from_db()
    assert template.mjml == MJML


def test_upload_stores_an_image_in_the_projects_folder_and_serves_it(personas, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    client = personas.client("member")

    response = client.post(
        url(personas.project, "email-images"), {"files": SimpleUploadedFile("logo.png", PNG, "image/png")}
    )

    assert response.status_code == 200
    [image_url] = response.json()["data"]
    path = re.fullmatch(r"http://testserver/media/(email-images/(\d+)/[0-9a-f]{32}\.png)", image_url)
    assert path and int(path.group(2)) == personas.project.pk
    assert (tmp_path / path.group(1)).read_bytes() == PNG
    served = Client().get(f"/media/{path.group(1)}")  # no session: email clients load it
    assert served.status_code == 200 and b"".join(served.streaming_content) == PNG


def test_only_email_images_are_served_from_media(settings, tmp_path, db):
    settings.MEDIA_ROOT = tmp_path / "media"
    (tmp_path / "media" / "email-images").mkdir(parents=True)
    (tmp_path / "media" / "private.txt").write_text("secret")
    (tmp_path / "secret.txt").write_text("secret")

    assert Client().get("/media/private.txt").status_code == 404
    for escape in ("/media/email-images/../private.txt", "/media/email-images/%2e%2e/%2e%2e/secret.txt"):
        assert Client().get(escape).status_code in (400, 404), escape  # Django refuses the path


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("notes.png", b"just some text", "notes.png: not a PNG, JPEG, GIF or WebP image."),
        ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "logo.svg: not a"),
        ("page.html", b"<html><script>alert(1)</script></html>", "page.html: not a"),
    ],
)
def test_upload_refuses_what_is_not_an_image(personas, settings, tmp_path, name, content, error):
    settings.MEDIA_ROOT = tmp_path

    response = personas.client("member").post(
        url(personas.project, "email-images"), {"files": SimpleUploadedFile(name, content, "image/png")}
    )

    assert response.status_code == 400
    assert response.json()["errors"][0].startswith(f"files: {error}")
    assert not any(tmp_path.rglob("*.*"))


def test_upload_refuses_an_image_over_the_size_limit_and_stores_none_of_the_batch(
    personas, settings, tmp_path, monkeypatch
):
    settings.MEDIA_ROOT = tmp_path
    monkeypatch.setattr(email_forms, "MAX_IMAGE_BYTES", 100)
    files = [SimpleUploadedFile("small.png", PNG, "image/png"), SimpleUploadedFile("big.png", PNG * 3, "image/png")]

    response = personas.client("member").post(url(personas.project, "email-images"), {"files": files})

    assert response.status_code == 400
    assert response.json()["errors"] == ["files: big.png: 216\xa0bytes is over the limit of 100\xa0bytes."]
    assert not any(tmp_path.rglob("*.*"))


# --- Tenancy ----------------------------------------------------------------------------------


def test_every_page_and_endpoint_is_404_for_an_outsider(personas, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    template = make_template(personas.project)
    client = personas.client("outsider")
    base = f"email-templates/{template.pk}"
    gets = ["email-templates", "email-templates/new", base, f"{base}/preview", f"{base}/designer"]
    posts = {
        "email-templates/new": {"name": "Stolen"},
        base: settings_post(subject="Stolen"),
        f"{base}/send-test": {"to_email": "eve@example.com"},
        f"{base}/publish": {},
        f"{base}/design": {"design": "{}", "mjml": ""},
        "email-images": {"files": SimpleUploadedFile("x.png", PNG, "image/png")},
    }

    for path in gets:
        assert client.get(url(personas.project, path)).status_code == 404, path
    for path, data in posts.items():
        assert client.post(url(personas.project, path), data).status_code == 404, path

    template.refresh_from_db()
    assert template.subject == "Thanks!" and not template.versions.exists()
    assert EmailTemplate.objects.filter(project=personas.project).count() == 1
    assert not Delivery.objects.exists() and not any(tmp_path.rglob("*.*"))


def test_another_projects_template_is_404_through_my_project(personas):
    foreign = make_template(personas.other_project, "Theirs")
    client = personas.client("member")
    base = f"email-templates/{foreign.pk}"

    for path in (base, f"{base}/preview", f"{base}/designer"):
        assert client.get(url(personas.project, path)).status_code == 404, path
    for path in (f"{base}/publish", f"{base}/send-test", f"{base}/design"):
        assert client.post(url(personas.project, path), {"to_email": "a@example.com"}).status_code == 404, path
