"""Liquid personalisation: `{{ customer.name }}`, `{{ event.properties.item }}`, in a sandbox.

Templates are written by project members, not by the operators, so the environment has no
loader and no `include`/`render` tags (no file access), and every render is bounded: loops,
output, variables and context depth (python-liquid's resource limits), the size of what a filter
is given (`(1..4000000) | join` is refused, not computed), range literals (checked when the
template is parsed) and the time a render takes (`RENDER_SECONDS`). A runaway template fails its
render with a `PersonalisationError` instead of eating a request or a worker; at save time that
is the field's error, at send time that one delivery's. Undefined variables render as empty
strings (Liquid's default), so a missing trait leaves a blank unless the template says
`| default: "there"`.
"""

import functools
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass

from liquid import BoundTemplate, Environment, Expression, RenderContext
from liquid.ast import Node
from liquid.builtin.expressions.primitive import FloatLiteral, IntegerLiteral, RangeLiteral
from liquid.exceptions import LiquidError, ResourceLimitError
from liquid.output import LimitedStringIO

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


# Bounds of our own, beside python-liquid's resource limits (on the environment below).
RENDER_SECONDS = 1.0  # one render of one field; an email renders in milliseconds
RANGE_ITEMS_LIMIT = 10_000  # a range literal `(a..b)`: as many as a render may loop over
FILTER_ITEMS_LIMIT = 10_000  # items of an array (or range, or object) given to a filter
FILTER_CHARS_LIMIT = 100_000  # characters of a string given to a filter (a trait is at most 32 KB)
FILTER_INTEGER_DIGITS = 100  # digits of an integer given to a filter (`times` squares them otherwise)

_deadline: ContextVar[float | None] = ContextVar("liquid_render_deadline", default=None)


class RenderLimitError(ResourceLimitError):
    """A bound of ours, reported like python-liquid's own resource limits."""

    def __init__(self, message: str):
        super().__init__(message, token=None)


def _check_deadline() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise RenderLimitError(f"rendering took longer than {RENDER_SECONDS:g} s")


def _check_filter_input(name: str, value) -> None:
    if isinstance(value, str):
        if len(value) > FILTER_CHARS_LIMIT:
            raise RenderLimitError(f"{name}: given {len(value)} characters; at most {FILTER_CHARS_LIMIT}")
    elif isinstance(value, (list, tuple, range, dict, set, frozenset)):
        if len(value) > FILTER_ITEMS_LIMIT:
            raise RenderLimitError(f"{name}: given {len(value)} items; at most {FILTER_ITEMS_LIMIT}")
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > FILTER_INTEGER_DIGITS * 3.33:  # log2(10) bits per digit, about
            raise RenderLimitError(f"{name}: given an integer of more than {FILTER_INTEGER_DIGITS} digits")


def _text(value) -> str:
    return "" if value is None else str(value)


def _check_product(name: str, value, args: tuple) -> None:
    """The filters whose output can be the product of their inputs' sizes (100,000 characters
    replacing each of 100,000 others), refused before they run when it would be over the output
    limit; every other filter's output is within a few times its input."""
    if name == "replace" and args:
        text, old = _text(value), _text(args[0])
        new = _text(args[1]) if len(args) > 1 else ""
        count = text.count(old) if old else len(text) + 1
        size = len(text) + count * (len(new) - len(old))
    elif name == "join" and isinstance(value, (list, tuple, range)):
        separator = _text(args[0]) if args else " "
        size = sum(len(_text(item)) for item in value) + max(len(value) - 1, 0) * len(separator)
    else:
        return
    if size > SandboxedEnvironment.output_stream_limit:
        raise RenderLimitError(
            f"{name}: would make {size} characters; at most {SandboxedEnvironment.output_stream_limit}"
        )


def _bounded_filter(name: str, func):
    """`func` refusing oversized input, and stopping a render past its deadline: with loops and
    input bounded, each call is bounded, so checking between calls bounds the render's time."""

    @functools.wraps(func)  # keeps `with_context` and the like, which Liquid reads off the function
    def bounded(value, *args, **kwargs):
        _check_deadline()
        _check_filter_input(name, value)
        for arg in args:
            _check_filter_input(name, arg)
        for arg in kwargs.values():
            _check_filter_input(name, arg)
        _check_product(name, value, args)
        return func(value, *args, **kwargs)

    bounded.__dict__.pop("filter_async", None)  # renders are synchronous: no unbounded way round
    return bounded


class _DeadlineStream(LimitedStringIO):
    """The output stream (of the render, and of each `capture`): every write checks the deadline,
    so a long loop that only writes stops in time too."""

    def write(self, text: str) -> int:
        _check_deadline()
        return super().write(text)


class _BoundedContext(RenderContext):
    def get_buffer(self, buf=None):
        carry = buf.size if isinstance(buf, LimitedStringIO) else 0
        return _DeadlineStream(limit=self.env.output_stream_limit - carry)


class _BoundedTemplate(BoundTemplate):
    context_class = _BoundedContext

    def _get_buffer(self):
        return _DeadlineStream(limit=self.env.output_stream_limit)


def _nodes_and_expressions(template: BoundTemplate):
    """Every node and expression of a parsed template, without recursion."""
    static_context = RenderContext(template)
    pending: list = list(template.nodes)
    while pending:
        item = pending.pop()
        yield item
        if isinstance(item, Node):
            pending.extend(item.children(static_context, include_partials=False))
            pending.extend(item.expressions())
        elif isinstance(item, Expression):
            pending.extend(item.children())


def _check_ranges(template: BoundTemplate) -> None:
    """Refuse a range literal of more than RANGE_ITEMS_LIMIT items when the template is parsed,
    even in a branch the sample data skips. A range with a variable end is bounded where it is
    used: by the loop iteration limit and the filter input bounds."""
    for item in _nodes_and_expressions(template):
        if not isinstance(item, RangeLiteral):
            continue
        ends = (item.start, item.stop)
        if all(isinstance(end, (IntegerLiteral, FloatLiteral)) for end in ends):
            start, stop = (int(end.value) for end in ends)
            if stop - start + 1 > RANGE_ITEMS_LIMIT:
                raise LiquidError(
                    f"range {item} has {stop - start + 1} items; at most {RANGE_ITEMS_LIMIT}", token=item.token
                )


class SandboxedEnvironment(Environment):
    """Liquid bounded for untrusted templates: resource limits, no partials, bounded filters. Public:
    the workflows' webhook requests render in it too (with a filter of their own)."""

    # Bounds on what one render may do (python-liquid's resource limits).
    loop_iteration_limit = 10_000  # iterations, summed over every loop of the render
    output_stream_limit = 2_000_000  # characters written (an email body is far below this)
    local_namespace_limit = 200_000  # bytes held by `assign`/`capture` variables
    context_depth_limit = 30  # nested scopes
    block_nesting_limit = 30  # nested blocks, checked at parse time
    template_class = _BoundedTemplate

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        # No partials: the default loader is empty anyway, but without the tags a template that
        # tries to include a file is refused when it is saved, with its line.
        for name in ("include", "render"):
            self.tags.pop(name, None)
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}


# HTML contexts (the MJML body) escape every value; the subject is plain text.
_html_env = SandboxedEnvironment(autoescape=True)
_text_env = SandboxedEnvironment(autoescape=False)


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
    token = _deadline.set(time.monotonic() + RENDER_SECONDS)
    try:
        return _parsed(source, html).render(**context)
    except LiquidError as exc:
        raise _error(exc, source) from exc
    except RecursionError as exc:
        raise PersonalisationError("template nests too deeply") from exc
    except MemoryError as exc:  # the bounds above should make this unreachable; if not, one render fails
        raise PersonalisationError("template needs too much memory") from exc
    finally:
        _deadline.reset(token)


@functools.lru_cache(maxsize=256)
def _parsed(source: str, html: bool) -> BoundTemplate:
    """The parsed (and range-checked) template, kept: a send renders the same few sources for every
    recipient, and parsing cost as much as rendering. Errors are not kept (lru_cache does not keep
    what raised)."""
    template = (_html_env if html else _text_env).from_string(source)
    _check_ranges(template)
    return template


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
