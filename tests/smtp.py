"""A real SMTP server on 127.0.0.1 for tests that send email (aiosmtpd), shared by every test package.

`smtp_server` points Django's SMTP backend at it for one test and records what it received.
"""

import email
import email.policy
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller


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
