"""How the tests drive Debian's Chromium: its path, and the flags this closed network needs.

Importing this module also lets Django's ORM run on the test thread while Playwright's sync API
keeps an asyncio loop there ("You cannot call this from an async context" is a false alarm: the
test code is plain synchronous code).
"""

import os

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
