"""MJML to HTML, and HTML to the plain-text part.

The compiler is `mjml-python` (bindings to mrml, the Rust port of MJML): it rendered every
component the designer produces, as the pure-Python `mjml` package did, ~125 times faster
(bench/mjml_compare.py), which lets a send compile each recipient's personalised MJML.
"""

import html
import re
from html.parser import HTMLParser

import mjml
from django.conf import settings

_POSITION_RE = re.compile(r"\s*(?:in root template\s*)?at position (\d+):(\d+)")
_HEAD_RE = re.compile(r"<mj-head\b[^>]*>", re.IGNORECASE)
_MJML_OPEN_RE = re.compile(r"<mjml\b[^>]*>", re.IGNORECASE)
# Whitespace with a line break between two HTML (not MJML) tags, as in `</a>\n  <a …>`: mrml
# drops it, gluing the two words together, where MJML keeps a space.
_INLINE_BREAK_RE = re.compile(r"(<(?!/?mj-)/?[a-zA-Z][^<>]*>)[ \t\r]*\n\s*(?=</?(?!mj-)[a-zA-Z])")


class MjmlError(Exception):
    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"line {self.line}: {self.message}"

    @property
    def problem(self) -> str:
        """As listed to the user: "MJML error on line 3: …"."""
        return f"MJML error on {self}" if self.line else f"MJML error: {self}"


def social_icon_origin() -> str:
    """Where `mj-social` icons are served: `emails/static/emails/social/` (scripts/social_icons.py)."""
    return f"{settings.PLATFORM_URL}/{settings.STATIC_URL.strip('/')}/emails/social/"


def compile_mjml(source: str, *, preheader: str = "") -> str:
    """Compile MJML to HTML; `preheader` (plain text) becomes the preview text unless the MJML has one."""
    if not source.strip():
        raise MjmlError("the design is empty")
    if preheader and "<mj-preview" not in source:
        source = _with_preview(source, preheader)
    # No web fonts (the HTML then links nothing on the internet; the stacks fall back to
    # Helvetica/Arial), social icons from Timonier instead of mailjet.com, and mj-include has no
    # loader, so it cannot read files.
    options = {"fonts": {}, "social_icon_origin": social_icon_origin()}
    try:
        return mjml.mjml2html(_INLINE_BREAK_RE.sub(r"\1 ", source), **options)
    except ValueError as exc:
        try:  # again as written, for an error position in the source's own lines
            mjml.mjml2html(source, **options)
        except ValueError as original:
            raise _error(str(original), source) from exc
        raise _error(str(exc), source) from exc


def _with_preview(source: str, preheader: str) -> str:
    preview = f"<mj-preview>{html.escape(preheader, quote=False)}</mj-preview>"
    if head := _HEAD_RE.search(source):
        return source[: head.end()] + preview + source[head.end() :]
    if root := _MJML_OPEN_RE.search(source):
        return source[: root.end()] + f"<mj-head>{preview}</mj-head>" + source[root.end() :]
    return source


def _error(message: str, source: str) -> MjmlError:
    """mrml reports a character offset ("at position 120:131"): turn it into a line number."""
    line = None
    if match := _POSITION_RE.search(message):
        line = source.count("\n", 0, int(match.group(1))) + 1
        message = message[: match.start()] + message[match.end() :]
    message = message.replace(" in root template", "").strip()
    return MjmlError(message, line=line)


# --- Lines short enough for 8-bit transfer ----------------------------------------------------

# Django sends an HTML part with a line over RFC 5322's 998 bytes quoted-printable, which costs a
# millisecond to encode (a fifth of composing an email) and a twentieth more bytes; mrml writes a
# whole <body> as one line. A line break in place of the space after a layout tag's name changes
# nothing a client renders (whitespace between a tag's name and its attributes is all the same),
# unlike one between tags, which could be a space in the text.
_LONG_LINE = 900  # characters: bytes are at least as many
_LAYOUT_TAG_SPACE_RE = re.compile(r"<(table|tr|td|div)\b[ \t]", re.IGNORECASE)


def short_lines(source: str) -> str:
    """`source` with a line break inside each layout tag of its lines too long for 8-bit transfer."""
    if max(map(len, source.split("\n"))) <= _LONG_LINE:
        return source
    return "\n".join(
        _LAYOUT_TAG_SPACE_RE.sub(r"<\1\n", line) if len(line) > _LONG_LINE else line for line in source.split("\n")
    )


# --- Plain text --------------------------------------------------------------------------------

_BLOCK_TAGS = {"p", "div", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "blockquote", "hr"}
_SKIPPED_TAGS = {"head", "style", "script", "title"}
_HEAD_END_RE = re.compile(r"</head\s*>", re.IGNORECASE)
_BODY_START_RE = re.compile(r"<body\b", re.IGNORECASE)


class _TextExtractor(HTMLParser):
    """Parses an email's HTML into `events`, what the text is made of (see text_from_events): the
    tags decide the structure here; the text found between them is only kept, so that a per-version
    plan (emails/composing.py) parses once and puts each recipient's values in afterwards."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        # ("t", text): written as is; ("d", data): text of the HTML, whitespace made one space;
        # ("a", href, items): a link, items ("d", data) or ("t", an image's alt) of its text.
        self.events: list[tuple] = []
        self.skipping = 0
        self.divs: list[bool] = []  # per open <div>: is it a hidden one (the preheader)?
        self.link: tuple[str, list[tuple]] | None = None  # (href, its text so far)

    def handle_starttag(self, tag, attrs):
        if tag == "div":
            hidden = "display:none" in (dict(attrs).get("style") or "").replace(" ", "").lower()
            self.divs.append(hidden)
            if hidden:
                self.skipping += 1
        if tag in _SKIPPED_TAGS:
            self.skipping += 1
        elif tag == "br":
            self._write("\n")
        elif tag in _BLOCK_TAGS or tag == "td":
            self._write("\n")
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.link = (href, [])
        elif tag == "img" and self.link is not None:
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self.link[1].append(("t", alt))

    def handle_endtag(self, tag):
        if tag == "div" and self.divs and self.divs.pop():
            self.skipping = max(0, self.skipping - 1)
        if tag in _SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self._write("\n")
        elif tag == "a" and self.link is not None:
            href, items = self.link
            self.link = None
            if not self.skipping:
                self.events.append(("a", href, items))

    def handle_data(self, data):
        if self.skipping:
            return
        if self.link is not None:
            self.link[1].append(("d", data))
        else:
            self.events.append(("d", data))

    def _write(self, text: str) -> None:
        if not self.skipping:
            self.events.append(("t", text))


def text_events(source: str) -> list[tuple]:
    """What html_to_text makes the text of: the parsed HTML's text, line breaks and links, in order."""
    extractor = _TextExtractor()
    # The head is skipped anyway (its styles are most of a compiled email): not parsing it halves the time.
    if (head_end := _HEAD_END_RE.search(source)) and (body := _BODY_START_RE.search(source, head_end.end())):
        source = source[body.start() :]
    extractor.feed(source)
    extractor.close()
    return extractor.events


WHITESPACE_RE = re.compile(r"\s+")


def _link_text(href: str, items: list[tuple]) -> str:
    text = " ".join("".join(WHITESPACE_RE.sub(" ", s) if kind == "d" else s for kind, s in items).split())
    if href and not href.startswith("#"):
        return f"{text} ({href})" if text and text != href else href
    return text


def text_from_events(events: list[tuple]) -> str:
    """The plain-text part from text_events(html): one block per paragraph, links as "text (url)"."""
    parts = []
    for event in events:
        kind = event[0]
        if kind == "t":
            parts.append(event[1])
        elif kind == "d":
            parts.append(WHITESPACE_RE.sub(" ", event[1]))  # in HTML a line break in text is a space
        else:
            parts.append(_link_text(event[1], event[2]))
    lines = []
    for raw in "".join(parts).split("\n"):
        line = " ".join(raw.replace("\u00a0", " ").split())
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip() + "\n"


def html_to_text(source: str) -> str:
    """The plain-text part: the visible text, one block per paragraph, links as "text (url)"."""
    return text_from_events(text_events(source))
