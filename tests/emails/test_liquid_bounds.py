"""Every Liquid render is bounded: range literals, filter inputs, time and memory. A template over
the bounds is refused at save under its field; at send time only that delivery fails, with why."""

import re
import time

import pytest
from django.core.exceptions import ValidationError

from emails import personalisation
from emails.models import Delivery
from emails.personalisation import PersonalisationError
from emails.sending import delivery_send
from emails.services import deliver, render_email, template_publish, template_save_design, template_update_settings

from .conftest import MJML, SETTINGS, identify, make_template

pytestmark = pytest.mark.django_db

CONTEXT = personalisation.sample_context()
# 100,000 characters in a variable, within the namespace limit, built by the template itself.
BIG = "{% capture big %}{% for i in (1..1000) %}" + "ab" * 50 + "{% endfor %}{% endcapture %}"


def render(source: str) -> str:
    return personalisation.render(source, context=CONTEXT, html=False)


def body(text: str) -> str:
    return f"<mjml><mj-body><mj-section><mj-column><mj-text>{text}</mj-text></mj-column></mj-section></mj-body></mjml>"


def test_a_huge_range_literal_is_refused_without_being_computed():
    started = time.monotonic()
    with pytest.raises(PersonalisationError, match=r"range \(1\.\.4000000\) has 4000000 items; at most 10000"):
        render("{{ (1..4000000) | join }}")
    assert time.monotonic() - started < 0.5


def test_a_huge_range_is_refused_even_in_a_branch_the_sample_data_skips():
    error = personalisation.check("Hi\n{% if customer.traits.vip %}{{ (1..20000000) | join }}{% endif %}", html=False)
    assert error is not None and error.line == 2
    assert error.message == "range (1..20000000) has 20000000 items; at most 10000"


def test_ranges_within_the_bound_still_work():
    assert render("{{ (1..5) | join: ',' }}") == "1,2,3,4,5"
    assert render("{% for i in (1..3) %}{{ i }}{% endfor %}") == "123"


def test_a_range_with_a_variable_end_is_bounded_where_it_is_used():
    with pytest.raises(PersonalisationError, match="join: given 4000000 items; at most 10000"):
        render("{% assign n = 4000000 %}{{ (1..n) | join }}")


def test_filter_inputs_are_bounded():
    with pytest.raises(PersonalisationError, match="upcase: given 200000 characters; at most 100000"):
        personalisation.render(
            "{{ customer.traits.blob | upcase }}", context={"customer": {"traits": {"blob": "x" * 200_000}}}, html=False
        )
    with pytest.raises(PersonalisationError, match="times: given an integer of more than 100 digits"):
        render("{% assign x = 99999999999 %}{% for i in (1..40) %}{% assign x = x | times: x %}{% endfor %}{{ x }}")


def test_a_filter_whose_output_would_be_the_product_of_its_inputs_is_refused_before_it_runs():
    started = time.monotonic()
    with pytest.raises(PersonalisationError, match="replace: would make 5000050000 characters; at most 2000000"):
        render(BIG + '{{ big | replace: "a", big | size }}')
    with pytest.raises(PersonalisationError, match="join: would make"):
        render(BIG + "{{ (1..10000) | join: big | size }}")
    assert time.monotonic() - started < 1


def test_a_render_is_bounded_in_time():
    # Each step within every bound, 10,000 of them: several seconds unbounded.
    slow = (
        BIG + '{% for i in (1..9000) %}{% assign y = big | replace: "a", "b" | replace: "b", "a" | size %}{% endfor %}'
    )
    started = time.monotonic()
    with pytest.raises(PersonalisationError, match="rendering took longer than 1 s"):
        render(slow)
    assert time.monotonic() - started < personalisation.RENDER_SECONDS + 1


def test_a_subject_over_the_bounds_is_refused_at_save_under_its_field_and_nothing_changes(project):
    template = make_template(project)
    with pytest.raises(ValidationError) as error:
        template_update_settings(template=template, **{**SETTINGS, "subject": "{{ (1..4000000) | join }}"})
    assert error.value.message_dict == {
        "subject": ["Liquid error on line 1: range (1..4000000) has 4000000 items; at most 10000"]
    }
    template.refresh_from_db()
    assert template.subject == SETTINGS["subject"]


def test_the_settings_page_shows_the_bound_under_the_subject(personas):
    from .test_template_views import make_template as make_page_template
    from .test_template_views import settings_post, url

    template = make_page_template(personas.project, subject="Before")
    response = personas.client("member").post(
        url(personas.project, f"email-templates/{template.pk}"), settings_post(subject="{{ (1..4000000) | join }}")
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert re.search(r'id="id_subject-errors"><li>Liquid error on line 1: range \(1..4000000\) has 4000000 items', page)
    template.refresh_from_db()
    assert template.subject == "Before"


def test_a_slow_body_is_reported_at_save_and_refused_at_publish(project):
    template = make_template(project)
    slow = (
        BIG + '{% for i in (1..9000) %}{% assign y = big | replace: "a", "b" | replace: "b", "a" | size %}{% endfor %}'
    )
    problems = template_save_design(template=template, design={"pages": []}, mjml=body(slow))
    assert problems == ["Liquid error on line 1: rendering took longer than 1 s"]
    with pytest.raises(ValidationError) as error:
        template_publish(template=template, user=None)
    assert error.value.message_dict["mjml"] == problems


def test_a_preview_over_the_bounds_for_a_customer_is_an_error_of_its_field(project):
    template = make_template(project, mjml=body("{{ (1..customer.traits.n) | join }}"))
    customer = identify(project, "big", {"email": "big@example.com", "n": 4_000_000})
    with pytest.raises(ValidationError) as error:
        render_email(source=template, customer=customer)
    assert error.value.message_dict == {"mjml": ["line 1: join: given 4000000 items; at most 10000"]}


def test_at_send_time_only_the_delivery_over_the_bounds_fails_with_the_reason(project, smtp_server, platform_url):
    # Saved and published fine: with the sample data the range is empty.
    template = make_template(project, mjml=body("Count: {{ (1..customer.traits.n) | join: ',' }}"), publish=True)
    huge = identify(project, "huge", {"email": "huge@example.com", "n": 4_000_000})
    small = identify(project, "small", {"email": "small@example.com", "n": 3})
    failed = deliver(version=template.published_version, customer=huge)
    sent = deliver(version=template.published_version, customer=small)
    delivery_send(delivery_id=failed.pk)
    delivery_send(delivery_id=sent.pk)
    failed.refresh_from_db()
    assert failed.status == Delivery.Status.FAILED
    assert failed.error == "could not render the template: mjml: line 1: join: given 4000000 items; at most 10000"
    assert "Count: 1,2,3" in smtp_server.wait_for("small@example.com").html
    sent.refresh_from_db()
    assert sent.status == Delivery.Status.SENT


def test_the_guide_template_still_renders(project):
    template = make_template(project, mjml=MJML)
    rendered = render_email(source=template, customer=None)
    assert rendered.subject == "Thanks Jane Doe" and "Thank you Jane Doe!" in rendered.html


def test_every_tag_renders_under_the_bounds_and_is_searched_for_ranges():
    tags = (
        '{% case customer.traits.plan %}{% when "pro", "x" %}P{% else %}O{% endcase %}'
        '{% for i in (1..3) %}{% cycle "a", "b" %}{% endfor %}{% tablerow i in (1..2) cols:2 %}{{ i }}{% endtablerow %}'
        '{% liquid\n assign x = "hi" | append: "!"\n echo x\n%}{% unless false %}U{% endunless %}'
        "{% capture y %}{{ event.properties.price }}{% endcapture %}{{ y }}{% if (1..3) contains 2 %}in{% endif %}"
    )
    assert render(tags) == 'Paba<tr class="row1">\n<td class="col1">1</td><td class="col2">2</td></tr>\nhi!U42in'
    with pytest.raises(PersonalisationError, match=r"range \(1\.\.99999\) has 99999 items"):
        render("{% case 1 %}{% when 1 %}{% liquid\nfor i in (1..99999)\nendfor\n%}{% endcase %}")
