"""A published version's email composed once, each recipient's values put in afterwards.

Rendering a delivery (emails/rendering.py) runs Liquid over the compiled HTML, rewrites its links,
adds the unsubscribe footer, converts the HTML to the plain-text part and adds the open pixel: all
of it over the whole email, for every recipient, though only a few values differ between two
recipients of a version: its `{{ … }}` outputs, the tracked links, the unsubscribe link and the
pixel. A `Plan` does that work once per version, on the compiled HTML with markers in place of
those values, and keeps the HTML as literal pieces between the values and the text part as the
parsed events of emails/compiling.text_events; a recipient's email is then the pieces joined
with their values and the events turned into text with theirs.

That is the email the per-recipient path makes only under conditions checked here, else there is
no plan (or no fast render for that recipient) and the per-recipient path runs:
- when the version is made: Liquid outputs only (no tags, no whitespace control), each in the
  text between tags (not in a tag, where it could change a link or an attribute), not just after
  an unfinished `&…` (which a value could complete into a character reference);
- per recipient: no value holds `<`, a quote or an `&` that does not start a whole character
  reference, as an HTML-escaped value never does: then the values change neither where the tags,
  links and `</body>` are nor how the text between tags is unescaped, so parsing with markers and
  substituting the (unescaped) values afterwards is parsing the recipient's HTML.
"""

import functools
import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from django.conf import settings

from . import links, personalisation, tracking
from .compiling import WHITESPACE_RE, social_icon_origin, text_events, text_from_events

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: a marker is _OPEN kind number _CLOSE
_MARKER_RE = re.compile("\ue000([LCUP])(\\d+)\ue001")
_SEPARATOR = "\ue002"  # between the outputs of the one Liquid render of a recipient's values
_SAFE_VALUE_RE = re.compile(r"[<\"']|&(?![A-Za-z0-9#]+;)")


def _marker(kind: str, number: int = 0) -> str:
    return f"{_OPEN}{kind}{number}{_CLOSE}"


@dataclass(frozen=True)
class Plan:
    outputs: str  # the Liquid source rendering every output at once, _SEPARATOR between them
    count: int  # how many outputs
    pieces: tuple  # literal HTML, and (kind, number) where a recipient's value goes
    events: tuple  # text_events of the HTML with markers (before the pixel, as the text is made)
    urls: tuple  # the UTM-tagged URL of each tracked link, by number
    track_opens: bool


@dataclass(frozen=True)
class Composed:
    html: str
    text: str


def plan_for(version, *, project_name: str) -> Plan | None:
    """The plan of a published version sent by the project named so (its footer names it), or None."""
    from .rendering import compiled_with_liquid

    if personalisation.has_liquid(version.preheader):
        return None
    if not personalisation.has_liquid(version.mjml) and version.html:
        compiled = version.html  # sent as compiled at publishing (rendering._personalise)
    else:
        compiled = compiled_with_liquid(version.mjml, version.preheader, social_icon_origin())
    if compiled is None:
        return None
    utm = tuple((name, getattr(version, name)) for name in ("utm_source", "utm_medium", "utm_campaign", "utm_content"))
    return _plan(compiled, utm, version.track_clicks, version.track_opens, project_name, settings.PLATFORM_URL)


@functools.lru_cache(maxsize=64)
def _plan(
    compiled: str, utm: tuple, track_clicks: bool, track_opens: bool, project_name: str, platform_url: str
) -> Plan | None:
    """Kept by the compiled HTML (compiled_with_liquid keeps that by the MJML) and what else it depends on."""
    if any(char in compiled for char in (_OPEN, _CLOSE, _SEPARATOR)):
        return None
    outputs = []

    def output(match: re.Match) -> str:
        markup = match.group(0)
        if markup.startswith(("{{-", "{%")) or markup.endswith("-}}"):
            raise _NoPlan
        outputs.append(markup)
        return _marker("L", len(outputs) - 1)

    try:
        skeleton = personalisation.LIQUID_MARKUP_RE.sub(output, compiled)
    except _NoPlan:
        return None
    if "{{" in skeleton or "{%" in skeleton:  # markup the pattern does not take whole: Liquid decides
        return None
    if not _outputs_in_text(skeleton):
        return None
    fixed = links.links(skeleton)
    if any(_OPEN in url or url.startswith(f"{platform_url}/e/u/") for url in fixed):
        return None  # an output in a link, or a link that could be a recipient's unsubscribe link
    urls: list[str] = []

    def track(url: str) -> str:
        urls.append(url)
        return _marker("C", len(urls) - 1)

    unsubscribe = _marker("U")
    skeleton = links.rewrite_links(skeleton, utm=dict(utm), track=track if track_clicks else None, keep={unsubscribe})
    skeleton = links.with_unsubscribe_footer(skeleton, url=unsubscribe, project_name=project_name)
    events = tuple(text_events(skeleton))
    if track_opens:
        skeleton = links.with_open_pixel(skeleton, url=_marker("P"))
    pieces: list = []
    position = 0
    for match in _MARKER_RE.finditer(skeleton):
        pieces.append(skeleton[position : match.start()])
        pieces.append((match.group(1), int(match.group(2))))
        position = match.end()
    pieces.append(skeleton[position:])
    return Plan(
        outputs=_SEPARATOR.join(outputs),
        count=len(outputs),
        pieces=tuple(pieces),
        events=_static_text(events),
        urls=tuple(urls),
        track_opens=track_opens,
    )


class _NoPlan(Exception):
    pass


def _outputs_in_text(skeleton: str) -> bool:
    """Whether every output marker is in the text between tags, none after an unfinished `&…`."""
    parser = _TextCounter()
    parser.feed(skeleton)  # whole, head included: every marker must be one the parser calls text
    parser.close()
    if parser.markers != skeleton.count(_OPEN):
        return False
    for match in _MARKER_RE.finditer(skeleton):
        before = skeleton[max(0, match.start() - 40) : match.start()]
        before = before[before.rfind(">") + 1 :]
        if "&" in before[before.rfind(";") + 1 :]:  # a reference a value could finish (or a marker between)
            return False
    return True


class _TextCounter(HTMLParser):
    """Counts the markers an HTML parser reports as text (not in tags, comments or declarations)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.markers = 0

    def handle_data(self, data):
        self.markers += data.count(_OPEN)


def _static_text(events: tuple) -> tuple:
    """The events, their text without markers made text already (one whitespace pass per version)."""
    static = []
    for event in events:
        if event[0] == "d" and _OPEN not in event[1]:
            static.append(("t", WHITESPACE_RE.sub(" ", event[1])))
        else:
            static.append(event)
    return tuple(static)


def compose(plan: Plan, *, delivery_id: int, context: dict, unsubscribe_url: str) -> Composed | None:
    """The recipient's HTML (with pixel) and text, or None when their values do not meet the
    conditions above (the caller renders the per-recipient way) or do not render."""
    if plan.count:
        try:
            rendered = personalisation.render(plan.outputs, context=context, html=True)
        except personalisation.PersonalisationError:
            return None  # the per-recipient render reports it, with the line the user wrote
        values = rendered.split(_SEPARATOR)
        if len(values) != plan.count or any(_SAFE_VALUE_RE.search(value) for value in values):
            return None
    else:
        values = []
    clicks = tracking.click_urls(delivery_id, list(plan.urls)) if plan.urls else []
    pixel = tracking.open_url(delivery_id) if plan.track_opens else ""
    in_html = {"L": values, "C": [html.escape(url) for url in clicks], "U": [html.escape(unsubscribe_url)]}
    in_html["P"] = [html.escape(pixel)]
    body = "".join(piece if isinstance(piece, str) else in_html[piece[0]][piece[1]] for piece in plan.pieces)
    in_text = {"L": [html.unescape(value) for value in values], "C": clicks, "U": [unsubscribe_url]}

    def put(text: str) -> str:
        if _OPEN not in text:
            return text
        return _MARKER_RE.sub(lambda match: in_text[match.group(1)][int(match.group(2))], text)

    events = []
    for event in plan.events:
        if event[0] == "d":
            events.append(("d", put(event[1])))
        elif event[0] == "a":
            events.append(("a", put(event[1]), [(kind, put(s)) for kind, s in event[2]]))
        else:
            events.append(event)
    return Composed(html=body, text=text_from_events(events))
