from tests.smtp import smtp_server  # noqa: F401 (the real SMTP server fixture, for every workflow test)
