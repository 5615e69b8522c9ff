"""From a template (draft or published version) and a recipient to the email's subject, HTML and text.

The order matters: Liquid runs on the MJML source (values HTML-escaped), so personalised
content gets MJML's layout; then MJML compiles to HTML; then links get their UTM parameters and
tracking, the unsubscribe link is made sure of, and the open pixel goes last (it is not a link
and must not appear in the text part).
"""

import functools
from dataclasses import dataclass
from functools import partial

from cdp.models import Customer

from . import composing, links, personalisation, tracking
from .compiling import MjmlError, compile_mjml, html_to_text, social_icon_origin
from .models import UTM_FIELDS, Delivery, EmailTemplate, EmailTemplateVersion
from .personalisation import PersonalisationError

PREVIEW_UNSUBSCRIBE_URL = "#unsubscribe"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    preheader: str
    html: str
    text: str


class RenderError(Exception):
    """A template that could not be rendered for this recipient; `field` is where the problem is."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


Source = EmailTemplate | EmailTemplateVersion


def utm_of(source: Source) -> dict[str, str]:
    return {name: getattr(source, name) for name in UTM_FIELDS}


def _personalise(source: Source, context: dict) -> tuple[str, str, str]:
    subject, preheader = _subject_and_preheader(source, context)
    return subject, preheader, _personalised_html(source, context, preheader)


def _subject_and_preheader(source: Source, context: dict) -> tuple[str, str]:
    try:
        # A header is one line: a trait holding a newline must not break (or inject) headers.
        subject = " ".join(personalisation.render(source.subject, context=context, html=False).split())
    except PersonalisationError as exc:
        raise RenderError("subject", str(exc)) from exc
    try:
        preheader = " ".join(personalisation.render(source.preheader, context=context, html=False).split())
    except PersonalisationError as exc:
        raise RenderError("preheader", str(exc)) from exc
    return subject, preheader


def _personalised_html(source: Source, context: dict, preheader: str) -> str:
    cached = isinstance(source, EmailTemplateVersion) and source.html
    if cached and not personalisation.has_liquid(source.mjml) and not personalisation.has_liquid(source.preheader):
        return source.html  # compiled at publishing, the same for everyone
    if isinstance(source, EmailTemplateVersion) and not personalisation.has_liquid(source.preheader):
        compiled = compiled_with_liquid(source.mjml, preheader, social_icon_origin())
        if compiled is not None:
            try:
                return personalisation.render(compiled, context=context, html=True)
            except PersonalisationError:
                pass  # rendered again below, on the MJML, so that the error names the line the user wrote
    try:
        mjml = personalisation.render(source.mjml, context=context, html=True)
    except PersonalisationError as exc:
        raise RenderError("mjml", str(exc)) from exc
    try:
        html = compile_mjml(mjml, preheader=preheader)
    except MjmlError as exc:
        raise RenderError("mjml", exc.problem) from exc
    return html


@functools.lru_cache(maxsize=64)
def compiled_with_liquid(mjml: str, preheader: str, icon_origin: str) -> str | None:
    """A published version's MJML compiled once, its Liquid left in for each recipient's render, or
    None when that would not be the same email as rendering Liquid first and compiling per recipient.

    Kept by content (and the icon origin it was compiled with), so each version compiles once per
    worker however many it sends. Only `{{ … }}` outputs qualify, and only when every one comes out
    of the compiler as it went in, in the same order: an output replaces text in place, so
    rendering it before or after compiling gives the same HTML. A `{% … %}` tag may wrap MJML
    elements (a button shown to some), whose compiled layout depends on what the tag keeps, so a
    template with tags is compiled per recipient, as is one whose MJML does not compile unrendered.
    """
    del icon_origin  # part of the key: compile_mjml reads it from the settings
    source = personalisation.unescape_liquid(mjml)
    if "{%" in source:
        return None
    try:
        html = compile_mjml(mjml, preheader=preheader)
    except MjmlError:
        return None
    before = personalisation.LIQUID_MARKUP_RE.findall(source)
    after = personalisation.LIQUID_MARKUP_RE.findall(personalisation.unescape_liquid(html))
    return html if before == after else None


def _finish(
    source: Source,
    html: str,
    *,
    project_name: str,
    unsubscribe_url: str,
    track_clicks,
    open_pixel_url: str | None,
) -> tuple[str, str]:
    html = links.rewrite_links(html, utm=utm_of(source), track=track_clicks, keep={unsubscribe_url})
    html = links.with_unsubscribe_footer(html, url=unsubscribe_url, project_name=project_name)
    text = html_to_text(html)
    if open_pixel_url:
        html = links.with_open_pixel(html, url=open_pixel_url)
    return html, text


def render_preview(*, source: Source, customer: Customer | None, event: dict | None) -> RenderedEmail:
    """What a recipient would get, without tracking (links get their UTM parameters)."""
    context = personalisation.render_context(customer, event, sample_event=event is None)
    context["unsubscribe_url"] = PREVIEW_UNSUBSCRIBE_URL
    subject, preheader, html = _personalise(source, context)
    project = source.project if isinstance(source, EmailTemplate) else source.template.project
    html, text = _finish(
        source,
        html,
        project_name=project.name,
        unsubscribe_url=PREVIEW_UNSUBSCRIBE_URL,
        track_clicks=None,
        open_pixel_url=None,
    )
    return RenderedEmail(subject=subject, preheader=preheader, html=html, text=text)


def render_delivery(delivery: Delivery) -> RenderedEmail:
    """The email of one delivery, with its tracking links (tokens carry the delivery's id)."""
    source: Source = delivery.template_version or delivery.template
    is_test = delivery.kind == Delivery.Kind.TEST
    context = personalisation.render_context(delivery.customer, delivery.event, sample_event=is_test)
    unsubscribe_url = tracking.unsubscribe_url(delivery.pk)
    context["unsubscribe_url"] = unsubscribe_url
    if isinstance(source, EmailTemplateVersion) and (
        plan := composing.plan_for(source, project_name=delivery.project.name)
    ):
        # The version composed once, this recipient's values put in (the same email: composing.py).
        subject, preheader = _subject_and_preheader(source, context)
        composed = composing.compose(plan, delivery_id=delivery.pk, context=context, unsubscribe_url=unsubscribe_url)
        if composed is not None:
            return RenderedEmail(subject=subject, preheader=preheader, html=composed.html, text=composed.text)
    subject, preheader, html = _personalise(source, context)
    html, text = _finish(
        source,
        html,
        project_name=delivery.project.name,
        unsubscribe_url=unsubscribe_url,
        track_clicks=partial(tracking.click_url, delivery.pk) if source.track_clicks else None,
        open_pixel_url=tracking.open_url(delivery.pk) if source.track_opens else None,
    )
    return RenderedEmail(subject=subject, preheader=preheader, html=html, text=text)
