"""Liquid in subject, preheader and body: variables, filters, errors with their line, the sandbox."""

import pytest
from django.core.exceptions import ValidationError

from emails import personalisation
from emails.personalisation import PersonalisationError
from emails.services import render_email, template_publish, template_save_design, template_update_settings

from .conftest import MJML, SETTINGS, identify, make_template

CONTEXT = {
    "customer": {"id": "c-1", "name": "Ada", "email": "ada@example.com", "traits": {"plan": "pro", "age": 36}},
    "event": {"name": "Order Completed", "properties": {"item": "Lamp"}},
}


def render(source: str, *, html: bool = True) -> str:
    return personalisation.render(source, context=CONTEXT, html=html)


def test_customer_and_event_variables():
    source = "{{ customer.name }} {{ customer.email }} {{ customer.traits.plan }} {{ customer.id }} "
    source += "{{ event.name }} {{ event.properties.item }}"
    assert render(source) == "Ada ada@example.com pro c-1 Order Completed Lamp"


def test_standard_filters():
    assert render('{{ customer.name | upcase }} {{ "2024-03-05T10:00:00Z" | date: "%d %b %Y" }}') == "ADA 05 Mar 2024"


def test_undefined_variables_render_empty_and_default_fills_them():
    assert render("[{{ customer.traits.missing }}][{{ nothing.at.all }}]") == "[][]"
    assert render('{{ customer.traits.missing | default: "there" }}') == "there"


def test_values_are_html_escaped_in_the_body_not_in_the_subject():
    context = {"customer": {"name": "<b>Bob & co</b>"}}
    escaped = "&lt;b&gt;Bob &amp; co&lt;/b&gt;"
    assert personalisation.render("{{ customer.name }}", context=context, html=True) == escaped
    assert personalisation.render("{{ customer.name }}", context=context, html=False) == "<b>Bob & co</b>"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("{% if customer.traits.age &gt; 30 %}senior{% endif %}", "senior"),
        ("{% if customer.traits.age &lt; 30 %}young{% else %}not young{% endif %}", "not young"),
        ("{% if customer.traits.plan == &quot;pro&quot; %}pro!{% endif %}", "pro!"),
        ("{% if customer.traits.plan == &#39;pro&#39; and customer.traits.age &gt;= 18 %}ok{% endif %}", "ok"),
        ('{{ customer.name | append: " &amp; co" }}', "Ada & co"),
    ],
)
def test_entities_inside_liquid_markup_are_unescaped(source, expected):
    assert render(source) == expected


def test_entities_outside_liquid_markup_are_left_alone():
    assert render("a &gt; b {{ customer.name }}") == "a &gt; b Ada"


def test_a_huge_loop_is_cut():
    source = "{% for i in (1..1000) %}{% for j in (1..1000) %}x{% endfor %}{% endfor %}"
    with pytest.raises(PersonalisationError, match="loop iteration limit"):
        render(source)


def test_output_size_is_bounded():
    context = {"customer": {"traits": {"blob": "x" * 100_000}}}
    source = "{% for i in (1..50) %}{{ customer.traits.blob }}{% endfor %}"
    with pytest.raises(PersonalisationError, match="output stream limit"):
        personalisation.render(source, context=context, html=True)


@pytest.mark.parametrize("tag", ['{% include "/etc/passwd" %}', '{% render "secrets" %}'])
def test_include_and_render_are_refused_with_their_line(tag):
    error = personalisation.check(f"Hello\n{tag}", html=True)
    assert error is not None and error.line == 2
    assert "unexpected tag" in error.message


def test_syntax_error_reports_its_line():
    error = personalisation.check("line one\nline two\n{{ customer.name | }}", html=True)
    assert error.line == 3
    assert str(error).startswith("line 3:")


def test_save_design_reports_a_liquid_error_with_its_line_and_keeps_the_design(project):
    template = make_template(project)
    broken = MJML.replace("Thank you", "{% iff customer.name %}Thank you")
    problems = template_save_design(template=template, design={"kept": True}, mjml=broken)
    assert problems == ["Liquid error on line 5: unexpected tag 'iff'"]
    template.refresh_from_db()
    assert template.mjml == broken and template.design == {"kept": True}


def test_publish_is_blocked_by_liquid_errors_listing_each_with_its_line(project):
    template = make_template(project)
    template_save_design(template=template, design={}, mjml=MJML.replace("Thank you", "{% if x %}Thank you"))
    template.subject = "Hi {{ customer.name | nosuchfilter }}"
    template.save()
    with pytest.raises(ValidationError) as raised:
        template_publish(template=template, user=None)
    errors = raised.value.message_dict
    assert errors["subject"] == ["Liquid error on line 1: unknown filter 'nosuchfilter'"]
    assert errors["mjml"] == ["Liquid error on line 5: expected tag endif, found end of expression"]
    assert template.versions.count() == 0


def test_settings_report_liquid_errors_under_their_field(project):
    template = make_template(project)
    with pytest.raises(ValidationError) as raised:
        template_update_settings(template=template, **{**SETTINGS, "preheader": "{% if %}"})
    assert list(raised.value.message_dict) == ["preheader"]
    assert "line 1" in raised.value.message_dict["preheader"][0]


def test_preview_personalises_for_a_customer_or_sample_data(project):
    template = make_template(project)
    customer = identify(project, "u-1", {"name": "Grace Hopper", "email": "grace@example.com"})
    assert render_email(source=template, customer=customer).subject == "Thanks Grace Hopper"
    sample = render_email(source=template, customer=None)
    assert sample.subject == "Thanks Jane Doe"
    assert "Thank you Jane Doe!" in sample.html and "Thank you Jane Doe!" in sample.text
