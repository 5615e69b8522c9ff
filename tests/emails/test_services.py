"""Templates, settings, publishing and versions; every read and write scoped by project."""

import pytest
from django.core.exceptions import ValidationError

from emails import selectors
from emails.models import Delivery, EmailTemplate
from emails.rendering import render_delivery
from emails.services import (
    deliver,
    render_email,
    send_test,
    template_create,
    template_publish,
    template_save_design,
    template_update_settings,
)
from tests.factories import ProjectFactory

from .conftest import MJML, SETTINGS, identify, make_template


def test_create_requires_a_name_unique_in_the_project(project):
    with pytest.raises(ValidationError) as raised:
        template_create(project=project, name="  ", user=None)
    assert list(raised.value.message_dict) == ["name"]
    template_create(project=project, name="Welcome", user=None)
    with pytest.raises(ValidationError) as raised:
        template_create(project=project, name="Welcome", user=None)
    assert "already exists" in raised.value.message_dict["name"][0]
    template_create(project=ProjectFactory(), name="Welcome", user=None)  # another project may


def test_new_template_is_a_draft(project):
    template = template_create(project=project, name="Welcome", user=None)
    assert template.status == "draft" and template.has_unpublished_changes


def test_settings_errors_are_per_field_and_change_nothing(project):
    template = make_template(project)
    bad = {**SETTINGS, "subject": "New", "from_email": "not-an-address", "reply_to": "x@", "utm_source": "u" * 101}
    with pytest.raises(ValidationError) as raised:
        template_update_settings(template=template, **bad)
    assert set(raised.value.message_dict) == {"from_email", "reply_to", "utm_source"}
    template.refresh_from_db()
    assert template.subject == SETTINGS["subject"]


def test_subject_must_be_one_line(project):
    template = make_template(project)
    with pytest.raises(ValidationError) as raised:
        template_update_settings(template=template, **{**SETTINGS, "subject": "a\r\nBcc: x@example.com"})
    assert list(raised.value.message_dict) == ["subject"]


def test_publishing_twice_makes_v1_and_v2(project):
    template = make_template(project)
    v1 = template_publish(template=template, user=None)
    template_save_design(template=template, design={}, mjml=MJML.replace("Thank you", "Many thanks"))
    v2 = template_publish(template=template, user=None)
    assert (v1.number, v2.number) == (1, 2)
    assert "Thank you" in v1.html and "Many thanks" in v2.html
    assert "Many thanks" in v2.text
    template.refresh_from_db()
    assert template.published_version == v2 and template.status == "published"
    assert list(selectors.template_versions(project, template)) == [v2, v1]


def test_editing_after_publishing_makes_a_draft(project):
    template = make_template(project, publish=True)
    assert template.status == "published"
    template_update_settings(template=template, **{**SETTINGS, "subject": "Changed"})
    template.refresh_from_db()
    assert template.status == "draft" and template.has_unpublished_changes
    assert template.published_version.subject == SETTINGS["subject"]  # the version is untouched


def test_saving_the_same_settings_keeps_published_status(project):
    template = make_template(project, publish=True)
    template_update_settings(template=template, **SETTINGS)
    template.refresh_from_db()
    assert template.status == "published"


def test_publish_requires_a_subject_and_valid_mjml(project):
    template = make_template(project)
    template_update_settings(template=template, **{**SETTINGS, "subject": ""})
    problems = template_save_design(template=template, design={}, mjml="<mjml><mj-body><mj-text>x</mj-body></mjml>")
    assert problems == ["MJML error: unexpected end of stream"]
    with pytest.raises(ValidationError) as raised:
        template_publish(template=template, user=None)
    assert set(raised.value.message_dict) == {"subject", "mjml"}


def test_deliver_sends_the_version_it_is_given_even_after_a_newer_one(project):
    template = make_template(project)
    v1 = template_publish(template=template, user=None)
    template_save_design(template=template, design={}, mjml=MJML.replace("Thank you", "Many thanks"))
    template_publish(template=template, user=None)
    customer = identify(project, "u-1", {"email": "ada@example.com", "name": "Ada"})
    delivery = deliver(version=v1, customer=customer)
    assert delivery.template_version == v1 and delivery.status == Delivery.Status.QUEUED
    rendered = render_delivery(delivery)
    assert "Thank you Ada!" in rendered.html and "Many thanks" not in rendered.html


def test_deliver_to_a_customer_without_email_is_skipped_with_the_reason(project):
    template = make_template(project, publish=True)
    customer = identify(project, "u-2", {"name": "No Mail"})
    delivery = deliver(version=template.published_version, customer=customer, workflow_step="step-1")
    assert delivery.status == Delivery.Status.FAILED
    assert delivery.error == "skipped: the customer has no email address"
    assert delivery.workflow_step == "step-1"


def test_selectors_and_services_refuse_another_projects_objects(project):
    template = make_template(project, publish=True)
    other = ProjectFactory()
    other_template = make_template(other, name="Theirs")
    stranger = identify(other, "s-1", {"email": "s@example.com"})
    assert [t.name for t in selectors.templates_list(project)] == ["Purchase Thank You"]
    assert selectors.templates_list(project)[0].used_by == []
    with pytest.raises(EmailTemplate.DoesNotExist):
        selectors.template_get(project, other_template.pk)
    assert list(selectors.template_versions(other, template)) == []
    assert list(selectors.customer_deliveries(project, stranger)) == []
    with pytest.raises(ValidationError):
        render_email(source=template, customer=stranger)
    with pytest.raises(ValidationError):
        send_test(template=template, to_email="me@example.com", user=None, customer=stranger)
    with pytest.raises(ValueError):
        deliver(version=template.published_version, customer=stranger)


def test_customer_deliveries_lists_a_customers_emails(project):
    template = make_template(project, publish=True)
    customer = identify(project, "u-3", {"email": "u3@example.com"})
    delivery = deliver(version=template.published_version, customer=customer)
    assert list(selectors.customer_deliveries(project, customer)) == [delivery]


def test_a_sent_version_cannot_be_deleted_alone_but_its_project_can(project):
    from django.db.models import RestrictedError

    template = make_template(project, publish=True)
    customer = identify(project, "u-4", {"email": "u4@example.com"})
    deliver(version=template.published_version, customer=customer)
    with pytest.raises(RestrictedError):
        template.published_version.delete()
    project.delete()
    assert not Delivery.objects.exists() and not EmailTemplate.objects.exists()


def test_a_new_template_starts_with_its_name_as_subject_and_can_be_published_as_the_guide_does(project):
    from emails.services import template_create, template_publish, template_save_design

    from .conftest import MJML

    template = template_create(project=project, name="Purchase Thank You", user=None)
    assert template.subject == "Purchase Thank You"
    assert template_save_design(template=template, design={"pages": []}, mjml=MJML) == []
    assert template_publish(template=template, user=None).subject == "Purchase Thank You"
