"""Create `.env` from `.env.example` with a fresh SECRET_KEY, unless `.env` already exists.

Run by `make run`. Standard library only.
"""

import os
import re
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    target = ROOT / ".env"
    if target.exists():
        return 0
    example = (ROOT / ".env.example").read_text()
    # token_urlsafe uses only [A-Za-z0-9_-]: nothing that a .env parser (honcho's or
    # django-environ's) would read as a quote, a comment or a separator.
    key = secrets.token_urlsafe(50)
    content, count = re.subn(r"(?m)^SECRET_KEY=.*$", f"SECRET_KEY={key}", example)
    if count != 1:
        print(".env.example must have exactly one `SECRET_KEY=` line", file=sys.stderr)
        return 1
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    print(f"Created {target.relative_to(ROOT)} with a new SECRET_KEY")
    return 0


if __name__ == "__main__":
    sys.exit(main())
