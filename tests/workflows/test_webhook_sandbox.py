"""Webhook requests render in the emails' public sandbox: its bounds hold for a step's Liquid too."""

import pytest

from emails.personalisation import SandboxedEnvironment
from workflows import requests as webhook_requests


def test_webhook_requests_render_in_the_public_sandboxed_environment():
    assert isinstance(webhook_requests._env, SandboxedEnvironment)


def test_a_webhook_body_looping_past_the_sandbox_limit_is_refused_with_its_field():
    step = {
        "url": "http://127.0.0.1/hook",
        "body": '{"n": "{% for i in (1..100000) %}{% for j in (1..100) %}x{% endfor %}{% endfor %}"}',
    }
    with pytest.raises(webhook_requests.RequestError, match="^body: "):
        webhook_requests.render(step, customer=None, event=None, data=None)


def test_a_webhook_body_cannot_include_a_partial():
    step = {"url": "http://127.0.0.1/hook", "body": '{"n": "{% include \'secrets\' %}"}'}
    with pytest.raises(webhook_requests.RequestError, match="^body: "):
        webhook_requests.render(step, customer=None, event=None, data=None)
