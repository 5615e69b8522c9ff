"""An open instance is no spam relay: a template sends only from the project's declared sending
domains (or the server's own), and test sends go only to the organization's members, rate limited.

Also the project Settings fields this rests on: Sending domains and Time zone.
"""

import re
from datetime import timedelta

import pytest
from django.core.cache import cache

from emails import sender_policy
from emails.models import Delivery
from emails.services import send_test, template_create, template_publish, template_save_design
from organizations.models import Project
from tests.conftest import signed_in_client
from tests.factories import MembershipFactory
from timonier import clock

pytestmark = pytest.mark.django_db

MJML = "<mjml><mj-body><mj-section><mj-column><mj-text>Hi</mj-text></mj-column></mj-section></mj-body></mjml>"


def url(project, path=""):
    return f"/o/{project.organization.slug}/{project.slug}/{path}"


def settings_post(project, **overrides):
    data = {"name": project.name, "ingest_rate_limit": "", "timezone": project.timezone, "sending_domains": ""}
    data.update(overrides)
    return data


def template_post(**overrides):
    data = {"subject": "Hello", "from_name": "Acme", "from_email": "", "reply_to": "", "track_opens": "on"}
    data.update(overrides)
    return data


def make_template(project):
    template = template_create(project=project, name="Welcome", user=None)
    template_save_design(template=template, design={"pages": []}, mjml=MJML)
    return template


def error_under(field: str, page: str) -> str:
    match = re.search(rf'id="id_{field}-errors">(.*?)</ul>', page, re.DOTALL)
    return re.sub(r"<[^>]+>", " ", match.group(1)) if match else ""


def declare(project, *domains):
    project.sending_domains = list(domains)
    project.save(update_fields=["sending_domains"])


# --- Project Settings: Sending domains and Time zone ----------------------------------------------


def test_admin_declares_sending_domains_one_per_line_or_comma_separated_lower_cased(personas):
    client = personas.client("admin")

    response = client.post(
        url(personas.project, "settings"),
        settings_post(personas.project, sending_domains="Mail.Acme.example\nnews.acme.example, mail.acme.example"),
    )

    assert response.status_code == 302
    assert Project.objects.get(pk=personas.project.pk).sending_domains == ["mail.acme.example", "news.acme.example"]
    page = client.get(url(personas.project, "settings")).content.decode()
    assert "mail.acme.example\nnews.acme.example</textarea>" in page
    assert "<code>news.acme.example</code>" in page


def test_an_invalid_sending_domain_is_named_under_the_field_and_nothing_is_saved(personas):
    response = personas.client("admin").post(
        url(personas.project, "settings"),
        settings_post(personas.project, name="Renamed", sending_domains="acme.example\nnot a domain, -bad-.example"),
    )

    assert response.status_code == 200
    errors = error_under("sending_domains", response.content.decode())
    assert "“not” is not a domain name" in errors and "“-bad-.example” is not a domain name" in errors
    project = Project.objects.get(pk=personas.project.pk)
    assert (project.name, project.sending_domains) == (personas.project.name, [])


def test_admin_sets_the_project_time_zone(personas):
    client = personas.client("admin")

    response = client.post(url(personas.project, "settings"), settings_post(personas.project, timezone="Europe/Paris"))

    assert response.status_code == 302
    assert Project.objects.get(pk=personas.project.pk).timezone == "Europe/Paris"
    assert '<option value="Europe/Paris" selected>' in client.get(url(personas.project, "settings")).content.decode()


def test_an_unknown_time_zone_is_refused_under_its_field(personas):
    response = personas.client("admin").post(
        url(personas.project, "settings"), settings_post(personas.project, timezone="Mars/Olympus_Mons")
    )

    assert response.status_code == 200
    assert "Mars/Olympus_Mons" in error_under("timezone", response.content.decode())
    assert Project.objects.get(pk=personas.project.pk).timezone == "UTC"


def test_a_member_cannot_change_the_sending_domains(personas):
    response = personas.client("member").post(
        url(personas.project, "settings"), settings_post(personas.project, sending_domains="evil.example")
    )

    assert response.status_code == 403
    assert Project.objects.get(pk=personas.project.pk).sending_domains == []


# --- From addresses -------------------------------------------------------------------------------


def test_a_from_address_on_an_undeclared_domain_is_refused_under_the_from_field(personas):
    template = make_template(personas.project)

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}"), template_post(from_email="security@bank.example")
    )

    assert response.status_code == 400
    errors = error_under("from_email", response.content.decode())
    assert "bank.example is not a sending domain of this project" in errors
    assert "Settings → Sending domains" in errors
    template.refresh_from_db()
    assert (template.from_email, template.subject) == ("", "Welcome")  # nothing saved


@pytest.mark.parametrize("address", ["news@acme.example", "News@ACME.example", "team@localhost"])
def test_a_from_address_on_a_declared_domain_or_the_servers_own_is_saved(personas, settings, address):
    settings.DEFAULT_FROM_EMAIL = "Timonier <no-reply@localhost>"
    declare(personas.project, "acme.example")
    template = make_template(personas.project)

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}"), template_post(from_email=address)
    )

    assert response.status_code == 302
    template.refresh_from_db()
    assert template.from_email == address


def test_a_subdomain_of_a_declared_domain_is_another_domain(personas):
    declare(personas.project, "acme.example")
    template = make_template(personas.project)

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}"), template_post(from_email="x@mail.acme.example")
    )

    assert "mail.acme.example is not a sending domain" in error_under("from_email", response.content.decode())


def test_publish_refuses_a_from_address_whose_domain_was_removed_since(personas):
    declare(personas.project, "acme.example")
    template = make_template(personas.project)
    client = personas.client("member")
    client.post(url(personas.project, f"email-templates/{template.pk}"), template_post(from_email="news@acme.example"))
    declare(personas.project)

    response = client.post(url(personas.project, f"email-templates/{template.pk}/publish"))

    assert response.status_code == 400
    page = response.content.decode()
    assert "From address: acme.example is not a sending domain of this project" in page
    assert "acme.example is not a sending domain" in error_under("from_email", page)
    assert not template.versions.exists()


def test_the_service_refuses_to_publish_it_too(personas):
    declare(personas.project, "acme.example")
    template = make_template(personas.project)
    template.from_email = "news@acme.example"
    template.save()
    declare(personas.project, "other.example")

    with pytest.raises(Exception, match="not a sending domain"):
        template_publish(template=template, user=None)


# --- Test sends -----------------------------------------------------------------------------------


def test_a_test_send_to_someone_outside_the_organization_is_refused_under_the_address(personas):
    template = make_template(personas.project)

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}/send-test"), {"to_email": "victim@example.org"}
    )

    assert response.status_code == 400
    assert "Test emails go only to members of this organization" in error_under("to_email", response.content.decode())
    assert not Delivery.objects.exists()


def test_a_test_send_to_a_teammate_is_queued_whatever_the_case_of_the_address(personas):
    template = make_template(personas.project)

    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}/send-test"), {"to_email": personas.owner.email.upper()}
    )

    assert response.status_code == 302
    assert Delivery.objects.get(template=template).to_email == personas.owner.email.upper()


def test_a_member_of_another_organization_is_not_a_teammate(personas):
    template = make_template(personas.project)

    with pytest.raises(Exception, match="only to members of this organization"):
        send_test(template=template, to_email=personas.outsider.email, user=personas.member)


def test_test_sends_are_limited_per_person_then_allowed_again(personas):
    cache.clear()  # the allowance lives in the cache, which outlives a test's database
    template = make_template(personas.project)
    client = personas.client("member")
    send = url(personas.project, f"email-templates/{template.pk}/send-test")
    colleague = MembershipFactory(organization=personas.organization).user

    with clock.travel(clock.now()) as traveller:
        for _ in range(sender_policy.TEST_SENDS_PER_USER):
            assert client.post(send, {"to_email": personas.member.email}).status_code == 302
            traveller.advance(seconds=30)
        refused = client.post(send, {"to_email": personas.member.email})
        # Another person has their own allowance.
        assert signed_in_client(colleague).post(send, {"to_email": colleague.email}).status_code == 302
        # Sends were at 0 s, 30 s … 270 s and it is now 300 s: at 601 s the first one is out of the window.
        traveller.advance(sender_policy.TEST_SEND_WINDOW - timedelta(seconds=300) + timedelta(seconds=1))
        again = client.post(send, {"to_email": personas.member.email})

    assert refused.status_code == 400
    message = error_under("to_email", refused.content.decode())
    assert "You sent 10 test emails in the last 10 minutes" in message and "try again in 5 minutes" in message
    assert again.status_code == 302  # the first send left the window
    assert Delivery.objects.filter(kind="test").count() == sender_policy.TEST_SENDS_PER_USER + 2


def test_a_refused_test_send_does_not_use_up_the_allowance(personas):
    cache.clear()
    template = make_template(personas.project)
    client = personas.client("member")
    send = url(personas.project, f"email-templates/{template.pk}/send-test")

    for _ in range(sender_policy.TEST_SENDS_PER_USER):
        client.post(send, {"to_email": "stranger@example.org"})

    assert client.post(send, {"to_email": personas.member.email}).status_code == 302
