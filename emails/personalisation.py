"""Liquid personalisation: `{{ customer.name }}`, `{{ event.properties.item }}`, in a sandbox.

Templates are written by project members, not by the operators, so the environment has no
loader and no `include`/`render` tags (no file access), and bounded loops, output and context
depth: a runaway template fails its render with a `PersonalisationError` instead of eating a
worker. Undefined variables render as empty strings (Liquid's default), so a missing trait
leaves a blank unless the template says `| default: "there"`.
"""

import re
from dataclasses import dataclass

from liquid import Environment
from liquid.exceptions import LiquidError, ResourceLimitError

from cdp.models import Customer

# Liquid markup: an output `{{ … }}` or a tag `{% … %}` (which may span lines).
LIQUID_MARKUP_RE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
# The designer HTML-escapes text, so `{% if age > 30 %}` arrives as `{% if age &gt; 30 %}`.
# `&amp;` goes last so that `&amp;lt;` becomes `&lt;`, not `<`.
_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&#039;", "'"), ("&apos;", "'"))
_ENTITIES += (("&nbsp;", " "), ("&#160;", " "), ("&amp;", "&"))

SAMPLE_CUSTOMER = {
    "id": "sample-customer",
    "name": "Jane Doe",
    "email": "jane.doe@example.com",
    "traits": {"name": "Jane Doe", "first_name": "Jane", "email": "jane.doe@example.com", "plan": "pro"},
}
SAMPLE_EVENT = {"name": "Order Completed", "properties": {"item": "Sample item", "price": 42}}


class _SandboxedEnvironment(Environment):
    # Bounds on what one render may do (python-liquid's resource limits).
    loop_iteration_limit = 10_000  # iterations, summed over every loop of the render
    output_stream_limit = 2_000_000  # characters written (an email body is far below this)
    local_namespace_limit = 200_000  # bytes held by `assign`/`capture` variables
    context_depth_limit = 30  # nested scopes
    block_nesting_limit = 30  # nested blocks, checked at parse time

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        # No partials: the default loader is empty anyway, but without the tags a template that
        # tries to include a file is refused when it is saved, with its line.
        for name in ("include", "render"):
            self.tags.pop(name, None)


# HTML contexts (the MJML body) escape every value; the subject is plain text.
_html_env = _SandboxedEnvironment(autoescape=True)
_text_env = _SandboxedEnvironment(autoescape=False)


class PersonalisationError(Exception):
    """A template that cannot be parsed or rendered; `message` names the line when Liquid knows it."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Problem:
    field: str
    error: PersonalisationError

    def __str__(self) -> str:
        return f"{self.field}: {self.error}"


def unescape_liquid(source: str) -> str:
    """Turn the HTML entities inside Liquid markup back into characters; leave the rest as is."""

    def unescape(match: re.Match) -> str:
        markup = match.group(0)
        for entity, char in _ENTITIES:
            markup = markup.replace(entity, char)
        return markup

    return LIQUID_MARKUP_RE.sub(unescape, source)


def has_liquid(source: str) -> bool:
    return "{{" in source or "{%" in source


def _error(exc: LiquidError, source: str) -> PersonalisationError:
    context = exc.context()
    if context is not None:
        line = context[0]
    elif isinstance(exc, ResourceLimitError):
        line = None
    else:  # found at the end of the text: an unclosed block, reported where it opens
        line = _unclosed_block_line(source) or source.count("\n") + 1
    return PersonalisationError(str(exc.message), line=line)


_TAG_NAME_RE = re.compile(r"\{%-?\s*(\w+)")
_BLOCK_TAGS = {"if", "unless", "for", "case", "capture", "comment", "raw", "tablerow", "ifchanged", "doc"}


def _unclosed_block_line(source: str) -> int | None:
    opened: list[tuple[str, int]] = []
    for match in _TAG_NAME_RE.finditer(source):
        name = match.group(1)
        if name in _BLOCK_TAGS:
            opened.append((name, match.start()))
        elif name.startswith("end") and opened and opened[-1][0] == name[3:]:
            opened.pop()
    if not opened:
        return None
    return source.count("\n", 0, opened[-1][1]) + 1


def check(source: str, *, html: bool) -> PersonalisationError | None:
    """Parse `source` and render it once with sample data: the first error found, or None."""
    try:
        render(source, context=sample_context(), html=html)
    except PersonalisationError as exc:
        return exc
    return None


def render(source: str, *, context: dict, html: bool) -> str:
    """Render Liquid `source`; values are HTML-escaped when `html` (the body), not in the subject."""
    if not has_liquid(source):
        return source
    source = unescape_liquid(source)
    env = _html_env if html else _text_env
    try:
        return env.from_string(source).render(**context)
    except LiquidError as exc:
        raise _error(exc, source) from exc
    except RecursionError as exc:
        raise PersonalisationError("template nests too deeply") from exc


def customer_context(customer: Customer | None) -> dict:
    """What `{{ customer.* }}` sees. `customer.id` is the application's customer_id."""
    if customer is None:
        return dict(SAMPLE_CUSTOMER)
    traits = customer.traits or {}
    # Customer.name and .email are lower-cased copies for search: the traits keep the original case.
    name = traits.get("name") if isinstance(traits.get("name"), str) else customer.name
    email = traits.get("email") if isinstance(traits.get("email"), str) else customer.email
    return {"id": customer.external_id or "", "name": name or "", "email": email or "", "traits": traits}


def sample_context() -> dict:
    return {"customer": dict(SAMPLE_CUSTOMER), "event": dict(SAMPLE_EVENT)}


def render_context(customer: Customer | None, event: dict | None, *, sample_event: bool = False) -> dict:
    if event is None and sample_event:
        event = SAMPLE_EVENT
    return {"customer": customer_context(customer), "event": dict(event or {})}
