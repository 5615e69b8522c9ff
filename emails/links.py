"""What a compiled email's HTML gets before it is sent: UTM parameters, tracked links, the
open pixel and an unsubscribe link."""

import html
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# href="…" / href='…' of an <a> or <area> tag (MJML puts every link, button and linked image
# in an <a>).
_HREF_RE = re.compile(r"""(<(?:a|area)\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END_RE = re.compile(r"</body\s*>", re.IGNORECASE)


def with_utm(url: str, utm: dict[str, str]) -> str:
    """Append the non-empty UTM parameters, unless the link already has any utm_* of its own."""
    params = {key: value for key, value in utm.items() if value}
    if not params:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key.lower().startswith("utm_") for key, _ in query):
        return url
    extra = urlencode(params)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def rewrite_links(
    source: str, *, utm: dict[str, str], track: Callable[[str], str] | None, keep: set[str] = frozenset()
) -> str:
    """UTM-tag every http(s) link, then (with `track`) replace it by its tracked URL.

    mailto:, tel:, anchors and the links in `keep` (the unsubscribe link) are left alone.
    """

    def rewrite(match: re.Match) -> str:
        prefix, quote, raw = match.groups()
        url = html.unescape(raw).strip()
        if url in keep or not url.lower().startswith(("http://", "https://")):
            return match.group(0)
        url = with_utm(url, utm)
        if track is not None:
            url = track(url)
        return f"{prefix}{quote}{html.escape(url)}{quote}"

    return _HREF_RE.sub(rewrite, source)


def links(source: str) -> list[str]:
    return [html.unescape(m.group(3)).strip() for m in _HREF_RE.finditer(source)]


def before_body_end(source: str, fragment: str) -> str:
    matches = list(_BODY_END_RE.finditer(source))
    if not matches:
        return source + fragment
    end = matches[-1].start()
    return source[:end] + fragment + source[end:]


def with_unsubscribe_footer(source: str, *, url: str, project_name: str) -> str:
    """Append a small unsubscribe footer unless the email already links to `url`."""
    if url in links(source):
        return source
    footer = (
        '<div style="margin:0 auto;max-width:600px;padding:16px;text-align:center;'
        'font-family:Helvetica,Arial,sans-serif;font-size:12px;line-height:18px;color:#888888;">'
        f"You receive this email from {html.escape(project_name)}. "
        f'<a href="{html.escape(url)}" style="color:#888888;text-decoration:underline;">Unsubscribe</a>'
        "</div>"
    )
    return before_body_end(source, footer)


def with_open_pixel(source: str, *, url: str) -> str:
    pixel = f'<img src="{html.escape(url)}" width="1" height="1" alt="" style="display:block;border:0;">'
    return before_body_end(source, pixel)
