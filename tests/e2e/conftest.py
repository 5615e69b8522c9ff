"""End-to-end harness: a live Django server, a real SMTP server and headless Chromium.

Every test here uses `e2e` (directly or through `smtp_server`), which points the platform's
links at the live server and its email at the SMTP server of the test.
"""

import re
from pathlib import Path

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.smtp import ReceivedMail, SMTPServer, smtp_server  # noqa: F401 (fixtures and types the e2e tests use)

# --- Live server -------------------------------------------------------------------------------


@pytest.fixture
def e2e(live_server, settings):
    """The live platform server, with the settings a browser session against it needs."""
    settings.PLATFORM_URL = live_server.url
    # Plain HTTP on localhost: cookies must not be marked Secure, whatever the environment says.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    # Tests do not run collectstatic: serve and reference static files unhashed, from the finders.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    return live_server


@pytest.fixture(scope="session")
def base_url(live_server):
    """Relative URLs in `page.goto("/signup")` resolve against the live server."""
    return live_server.url


# --- Playwright --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium: Playwright cannot download its own browser here."""
    args = {**browser_type_launch_args, "args": [*browser_type_launch_args.get("args", []), *CHROMIUM_ARGS]}
    if "channel" not in args and Path(CHROMIUM).exists():
        args["executable_path"] = CHROMIUM
    return args


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "permissions": ["clipboard-read", "clipboard-write"]}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure in the test body, keep a full-page screenshot and the HTML of its page.

    They go to `test-results/<test name>.png` and `.html` (pytest-playwright's `--output` folder,
    which it empties at the start of each session).
    """
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when != "call" or not report.failed or page is None or page.is_closed():
        return report
    results = Path(item.config.getoption("--output")).absolute()
    stem = results / re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name).strip("_")
    try:
        results.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{stem}.png", full_page=True)
        Path(f"{stem}.html").write_text(f"<!-- {page.url} -->\n{page.content()}", encoding="utf-8")
    except Exception as exc:  # a dead browser must not hide the test's own failure
        report.sections.append(("e2e screenshot", f"could not save a screenshot: {exc!r}"))
    else:
        report.sections.append(("e2e screenshot", f"saved {stem}.png and {stem}.html ({page.url})"))
    return report


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e is a browser test (`-m "not browser"` skips them all)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)
