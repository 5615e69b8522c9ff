"""MJML → HTML with mrml, for every component the designer produces, and the plain-text part."""

import pytest

from emails.compiling import MjmlError, compile_mjml, html_to_text


def doc(body: str) -> str:
    return f"<mjml><mj-body><mj-section><mj-column>{body}</mj-column></mj-section></mj-body></mjml>"


@pytest.mark.parametrize(
    "body, expected",
    [
        ("<mj-text>Hello <b>you</b></mj-text>", ["Hello <b>you</b>"]),
        ('<mj-image src="https://cdn.example.com/a.png" alt="Logo" href="https://example.com"/>', ['alt="Logo"']),
        ('<mj-button href="https://example.com/buy" background-color="#123456">Buy</mj-button>', ["#123456", "Buy"]),
        ('<mj-divider border-color="#00ff00"/>', ["#00ff00"]),
        ('<mj-spacer height="42px"/>', ["42px"]),
        (
            '<mj-social><mj-social-element name="facebook" href="https://facebook.com/acme">Fb</mj-social-element>'
            "</mj-social>",
            ["https://facebook.com/acme", "Fb"],
        ),
        ('<mj-raw><p class="raw">Raw HTML</p></mj-raw>', ['<p class="raw">Raw HTML</p>']),
    ],
)
def test_each_component_compiles(body, expected):
    html = compile_mjml(doc(body))
    assert html.startswith("<!doctype html>")
    for needle in expected:
        assert needle in html


def test_sections_and_columns_compile():
    source = (
        '<mjml><mj-body><mj-section background-color="#abcdef"><mj-column width="60%"><mj-text>A</mj-text>'
        '</mj-column><mj-column width="40%"><mj-text>B</mj-text></mj-column></mj-section></mj-body></mjml>'
    )
    html = compile_mjml(source)
    assert "#abcdef" in html and "mj-column-per-60" in html and "mj-column-per-40" in html


def test_no_web_fonts_are_linked():
    assert "fonts.googleapis.com" not in compile_mjml(doc("<mj-text>x</mj-text>"))


def test_preheader_becomes_the_hidden_preview_text():
    html = compile_mjml(doc("<mj-text>Body</mj-text>"), preheader="Peek <inside>")
    assert "Peek &lt;inside&gt;" in html
    assert "Peek" not in html_to_text(html)


def test_errors_name_their_line():
    with pytest.raises(MjmlError) as raised:
        compile_mjml('<mjml>\n<mj-body>\n<mj-include path="/etc/passwd"/>\n</mj-body></mjml>')
    assert raised.value.line == 3  # and mj-include reads no file
    with pytest.raises(MjmlError, match="the design is empty"):
        compile_mjml("  ")


def test_text_part_keeps_links_as_text_and_url():
    html = compile_mjml(
        doc(
            '<mj-text>Hello <a href="https://example.com/a?x=1&amp;y=2">our shop</a></mj-text>'
            '<mj-button href="https://example.com/buy">Buy now</mj-button>'
        )
    )
    text = html_to_text(html)
    assert "Hello our shop (https://example.com/a?x=1&y=2)" in text
    assert "Buy now (https://example.com/buy)" in text
    assert "<" not in text


def test_words_split_by_a_line_break_between_tags_stay_apart():
    html = compile_mjml(
        doc('<mj-text><a href="https://a.example">Help</a>\n  <a href="https://b.example">Write</a></mj-text>')
    )
    assert "</a> <a" in html
    assert "Help (https://a.example) Write (https://b.example)" in html_to_text(html)


def test_social_icons_are_served_by_timonier_not_mailjet(settings):
    from pathlib import Path

    settings.PLATFORM_URL = "https://timonier.example.com"
    networks = ["facebook", "twitter", "linkedin", "instagram", "github", "youtube", "web"]
    elements = "".join(
        f'<mj-social-element name="{name}" href="https://example.com">{name}</mj-social-element>' for name in networks
    )
    html = compile_mjml(
        f"<mjml><mj-body><mj-section><mj-column><mj-social>{elements}</mj-social></mj-column></mj-section></mj-body></mjml>"
    )

    assert "mailjet" not in html
    static = Path(__file__).resolve().parents[2] / "emails" / "static" / "emails" / "social"
    for name in networks:
        assert f'src="https://timonier.example.com/static/emails/social/{name}.png"' in html
        assert (static / f"{name}.png").is_file()
