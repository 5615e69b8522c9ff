"""Make the social icons `mj-social` links to, so emails and previews load them from Timonier.

MJML's default icons live on mailjet.com; ours are white glyphs on transparent 64x64 PNGs (MJML
paints each network's colour behind them), drawn in headless Chromium from the SVGs of
simple-icons (CC0, https://simpleicons.org), except "web", a globe drawn here. Run once, commit
the PNGs:

    npm pack simple-icons@13 && tar xzf simple-icons-*.tgz
    .venv/bin/python scripts/social_icons.py package/icons
"""

import re
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parent.parent / "emails" / "static" / "emails" / "social"
# MJML's network names, and the simple-icons glyph each one shows.
NETWORKS = {
    "facebook": "facebook",
    "twitter": "x",
    "x": "x",
    "google": "google",
    "pinterest": "pinterest",
    "linkedin": "linkedin",
    "tumblr": "tumblr",
    "xing": "xing",
    "github": "github",
    "instagram": "instagram",
    "snapchat": "snapchat",
    "youtube": "youtube",
    "vimeo": "vimeo",
    "medium": "medium",
    "soundcloud": "soundcloud",
    "dribbble": "dribbble",
}
GLOBE = (
    '<svg viewBox="0 0 24 24" xmlns="http://www.w3.org/2000/svg" fill="none" stroke="white" stroke-width="1.6">'
    '<circle cx="12" cy="12" r="10"/><ellipse cx="12" cy="12" rx="4.5" ry="10"/>'
    '<path d="M2 12h20M4 6.5h16M4 17.5h16"/></svg>'
)


def main(icons: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    glyphs = {name: _white((icons / f"{slug}.svg").read_text()) for name, slug in NETWORKS.items()}
    glyphs["web"] = GLOBE
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 64, "height": 64})
        for name, svg in glyphs.items():
            page.set_content(
                "<html><body style='margin:0;background:transparent'>"
                f"<div style='width:64px;height:64px;padding:14px;box-sizing:border-box'>{svg}</div></body></html>"
            )
            page.locator("svg").evaluate("svg => { svg.style.width = '36px'; svg.style.height = '36px'; }")
            page.screenshot(path=str(OUT / f"{name}.png"), omit_background=True)
        browser.close()
    print(f"{len(glyphs)} icons in {OUT}")


def _white(svg: str) -> str:
    return re.sub(r"<svg ", '<svg fill="white" ', svg, count=1)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
