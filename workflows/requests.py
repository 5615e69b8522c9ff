"""A Webhook step's request rendered for one run, and the traits mapped from its response.

URL, header values and body take Liquid over `customer`, `event` (the trigger event) and `data`
(the run's data), in the emails' sandbox (bounded loops and output). `| json` writes a value as
JSON, so `{"name": {{ customer.name | json }}}` stays valid whatever the name holds. A body that
is not empty must render to JSON.
"""

import orjson
from liquid import Environment

from cdp.models import Customer
from emails.personalisation import PersonalisationError, SandboxedEnvironment, customer_context
from segments.conditions.evaluation import MISSING, lookup

MAX_BODY_BYTES = 256 * 1024


class RequestError(ValueError):
    """The step's request cannot be made for this run (a Liquid error, a body that is not JSON)."""


def _json_filter(value) -> str:
    return orjson.dumps(value, default=str).decode()


class _WebhookEnvironment(SandboxedEnvironment):
    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        self.filters["json"] = _json_filter


_env: Environment = _WebhookEnvironment(autoescape=False)


def _render(source: str, context: dict, what: str) -> str:
    try:
        return _env.from_string(source).render(**context)
    except PersonalisationError as exc:
        raise RequestError(f"{what}: {exc.message}") from exc
    except Exception as exc:  # liquid's errors, and RecursionError for a template nested too deep
        raise RequestError(f"{what}: {exc}") from exc


def context_for(customer: Customer | None, event: dict | None, data: dict | None) -> dict:
    return {"customer": customer_context(customer), "event": event or {}, "data": data or {}}


def render(step: dict, *, customer: Customer | None, event: dict | None, data: dict | None) -> dict:
    """{"method", "url", "headers", "body"} of the step for this run; raises RequestError."""
    context = context_for(customer, event, data)
    url = _render(step["url"], context, "url").strip()
    headers = {name: _render(value, context, f"headers.{name}") for name, value in (step.get("headers") or {}).items()}
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise RequestError(f"headers.{name}: renders to more than one line")
    body = _render(step.get("body") or "", context, "body")
    if len(body.encode()) > MAX_BODY_BYTES:
        raise RequestError(f"body: renders to more than {MAX_BODY_BYTES // 1024} KB")
    if body.strip():
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"body: does not render to JSON ({exc})") from None
    return {"method": step.get("method", "POST"), "url": url, "headers": headers, "body": body}


def response_traits(body: str, mapping: dict) -> dict:
    """Traits taken from a JSON response: {trait: value at the mapping's dotted path}."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    traits = {}
    for trait, path in mapping.items():
        value = lookup(document, path) if isinstance(document, dict) else MISSING
        if value is not MISSING:
            traits[trait] = value
    return traits
