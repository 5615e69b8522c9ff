"""End-to-end harness: a live Django server, a real SMTP server and headless Chromium.

Every test here uses `e2e` (directly or through `smtp_server`), which points the platform's
links at the live server and its email at the SMTP server of the test.
"""

import email
import email.policy
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.browser import CHROMIUM, CHROMIUM_ARGS

# --- SMTP --------------------------------------------------------------------------------------


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else ""

    def links(self) -> list[str]:
        return re.findall(r"https?://[^\s<>\"']+", self.text)


@dataclass
class SMTPServer:
    """What a real SMTP server on 127.0.0.1 received during one test."""

    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self._cond:
            self.messages.append(
                ReceivedMail(mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), message=message)
            )
            self._cond.notify_all()
        return "250 Message accepted for delivery"

    def to(self, recipient: str) -> list[ReceivedMail]:
        recipient = recipient.lower()
        with self._cond:
            return [m for m in self.messages if recipient in (r.lower() for r in m.rcpt_tos)]

    def wait_for(self, recipient: str, *, count: int = 1, timeout: float = 10.0) -> ReceivedMail:
        """The `count`-th message to `recipient`, waiting for it up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.to(recipient)
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [(m.rcpt_tos, m.message["Subject"]) for m in self.messages]
                    raise AssertionError(f"no email #{count} to {recipient} within {timeout}s; received: {got}")
                self._cond.wait(remaining)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server, and Django's SMTP backend pointed at it (overriding the locmem outbox)."""
    server = SMTPServer(host="127.0.0.1", port=_free_port())
    controller = Controller(server, hostname=server.host, port=server.port, server_hostname="localhost")
    controller.start()
    # pytest-django switched EMAIL_BACKEND to locmem at session start; these win for this test.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = server.host
    settings.EMAIL_PORT = server.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 10
    try:
        yield server
    finally:
        controller.stop()


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
