"""How the tests drive Debian's Chromium: its path, and the flags this closed network needs.

Importing this module also lets Django's ORM run on the test thread while Playwright's sync API
keeps an asyncio loop there ("You cannot call this from an async context" is a false alarm: the
test code is plain synchronous code).
"""

import os

from playwright.sync_api import Page

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("TIMONIER_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


# The email designer (GrapesJS), shared by its own tests and the guide's.


def open_designer(page: Page):
    page.get_by_role("link", name="Open Designer").click()
    page.wait_for_selector("body[data-designer-ready]", timeout=20_000)
    return page.frame_locator("iframe.gjs-frame")


def drag_block_below(page: Page, block_label: str, target) -> None:
    """Drag a block from the panel onto the lower edge of `target`, a component in the canvas.

    GrapesJS ignores Playwright's `drag_to`: the mouse goes down, moves there in steps, and waits
    over the target until Chromium's periodic dragover has reported that spot, before it is released.
    """
    block_element = page.locator(".gjs-block", has_text=block_label).first
    block_element.scroll_into_view_if_needed()
    block = block_element.bounding_box()
    box = target.bounding_box()
    start = (block["x"] + block["width"] / 2, block["y"] + block["height"] / 2)
    end = (box["x"] + box["width"] / 2, box["y"] + box["height"] - 4)
    page.mouse.move(*start)
    page.mouse.down()
    steps = 25
    for i in range(1, steps + 1):
        page.mouse.move(start[0] + (end[0] - start[0]) * i / steps, start[1] + (end[1] - start[1]) * i / steps)
        page.wait_for_timeout(20)
    for i in range(6):
        page.mouse.move(end[0] + i % 2, end[1])
        page.wait_for_timeout(60)
    page.mouse.up()
