"""Secrets at rest (TOTP seeds, webhook signing secrets): encrypted with keys from the environment.

`ENCRYPTION_KEYS` is a comma-separated list of Fernet keys (`manage.py generate_encryption_key`
prints one), newest first: the first encrypts, every one decrypts, so a key is rotated by putting
a new one in front and re-encrypting (`manage.py rotate_encryption_keys`) before dropping the old.
Without it, the key is derived from SECRET_KEY (so the embedded `make run` works out of the box),
and keys derived from SECRET_KEY_FALLBACKS still decrypt: rotating SECRET_KEY with the old one
in the fallbacks, then running `rotate_encryption_keys`, moves every secret to the new key.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

# Every encrypted column, as "app_label.Model": [fields]; `rotate_encryption_keys` re-encrypts
# them all. A new encrypted field is added here.
ENCRYPTED_FIELDS = {
    "accounts.Authenticator": ["encrypted_key"],
    "workflows.WebhookSecret": ["secret", "previous_secret"],
}


class DecryptionError(ValueError):
    """A stored secret none of the configured keys can open."""


def _derived_key(secret_key: str) -> str:
    digest = hashlib.sha256(b"timonier.secrets:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


@cache
def _fernet() -> MultiFernet:
    keys = [key.strip() for key in settings.ENCRYPTION_KEYS if key.strip()]
    if not keys:
        keys = [_derived_key(settings.SECRET_KEY), *(_derived_key(old) for old in settings.SECRET_KEY_FALLBACKS)]
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"ENCRYPTION_KEYS: key {position} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "`manage.py generate_encryption_key` prints one)"
            ) from exc
    return MultiFernet(fernets)


def generate_key() -> str:
    return Fernet.generate_key().decode()


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("the secret cannot be decrypted with the configured ENCRYPTION_KEYS") from exc


def reencrypt(token: str) -> str:
    """The same secret under the newest key (for a key rotation)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("the secret cannot be decrypted with the configured ENCRYPTION_KEYS") from exc


def encrypted_fields_rotate() -> dict[str, int]:
    """Re-encrypt every column of ENCRYPTED_FIELDS under the newest key, in one transaction.

    Returns the rows rewritten per model. Raises DecryptionError naming the rows no configured
    key opens, and then changes nothing (so a key is never dropped while still in use).
    """
    from django.apps import apps
    from django.db import transaction

    counts, unreadable = {}, []
    with transaction.atomic():
        for label, fields in ENCRYPTED_FIELDS.items():
            model = apps.get_model(label)
            rows = []
            for row in model.objects.select_for_update().only("pk", *fields).order_by("pk").iterator(chunk_size=500):
                try:
                    for field in fields:
                        if getattr(row, field):
                            setattr(row, field, reencrypt(getattr(row, field)))
                except DecryptionError:
                    unreadable.append(f"{label} {row.pk}")
                    continue
                rows.append(row)
            model.objects.bulk_update(rows, fields, batch_size=500)
            counts[label] = len(rows)
        if unreadable:
            transaction.set_rollback(True)
            raise DecryptionError(f"no configured key decrypts: {', '.join(unreadable)}")
    return counts


def reset_cache() -> None:
    """Forget the keys read from settings (tests that change ENCRYPTION_KEYS)."""
    _fernet.cache_clear()


@receiver(setting_changed)
def _keys_changed(*, setting: str, **kwargs) -> None:
    # pytest-django's `settings` fixture and override_settings send this: the keys follow them.
    if setting in ("ENCRYPTION_KEYS", "SECRET_KEY", "SECRET_KEY_FALLBACKS"):
        reset_cache()
