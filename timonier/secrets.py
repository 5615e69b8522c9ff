"""Secrets at rest (TOTP seeds, webhook signing secrets): encrypted with keys from the environment.

`ENCRYPTION_KEYS` is a comma-separated list of Fernet keys (`manage.py generate_encryption_key`
prints one), newest first: the first encrypts, every one decrypts, so a key is rotated by putting
a new one in front and re-encrypting (`manage.py rotate_encryption_keys`) before dropping the old.
Without it, one key is derived from SECRET_KEY, so the embedded `make run` works out of the box.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(ValueError):
    """A stored secret none of the configured keys can open."""


@cache
def _fernet() -> MultiFernet:
    keys = [key.strip() for key in settings.ENCRYPTION_KEYS if key.strip()]
    if not keys:
        digest = hashlib.sha256(b"timonier.secrets:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("the secret cannot be decrypted with the configured ENCRYPTION_KEYS") from exc


def reencrypt(token: str) -> str:
    """The same secret under the newest key (for a key rotation)."""
    return _fernet().rotate(token.encode()).decode()


def reset_cache() -> None:
    """Forget the keys read from settings (tests that change ENCRYPTION_KEYS)."""
    _fernet.cache_clear()
