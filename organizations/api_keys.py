"""API keys: creation, revocation and the lookup every API request makes.

A key reads `tk_` + 40 base62 characters. Its first 11 characters are the stored prefix that
finds the row; the rest is compared as a SHA-256 digest in constant time. Lookups are cached
(revocation clears the cache), and `last_used_at` is written at most once a minute per key, so
the hot path of the API does no write per request.
"""

import hashlib
import hmac
import secrets
import string
import time
from datetime import timedelta

from django.core.cache import cache
from django.db import IntegrityError, transaction

from timonier import clock

from .models import ApiKey, Project

KEY_PREFIX = "tk_"
PREFIX_LENGTH = 11
SECRET_ALPHABET = string.ascii_letters + string.digits
CACHE_SECONDS = 60
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _cache_key(prefix: str) -> str:
    return f"apikey:{prefix}"


def api_key_create(*, project: Project, name: str, created_by=None) -> tuple[ApiKey, str]:
    """Create a key and return it with the raw key, which is never stored nor shown again."""
    for _ in range(5):
        raw = KEY_PREFIX + "".join(secrets.choice(SECRET_ALPHABET) for _ in range(40))
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    project=project, name=name, prefix=raw[:PREFIX_LENGTH], key_hash=_hash(raw), created_by=created_by
                )
            return key, raw
        except IntegrityError:  # prefix collision: 62**8 makes this rare; draw again
            continue
    raise RuntimeError("could not draw a unique API key prefix")


def api_key_revoke(*, api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=clock.now())
    cache.delete(_cache_key(api_key.prefix))


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """The active key a raw key belongs to, with its project loaded; None if unknown or revoked."""
    if not raw_key or not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 100:
        return None
    prefix = raw_key[:PREFIX_LENGTH]
    cached = cache.get(_cache_key(prefix))
    if cached is None:
        key = ApiKey.objects.select_related("project__organization").filter(prefix=prefix).first()
        cached = key if key is not None else False
        cache.set(_cache_key(prefix), cached, CACHE_SECONDS)
    if cached is False or cached.revoked_at is not None:
        return None
    if not hmac.compare_digest(cached.key_hash, _hash(raw_key)):
        return None
    _touch(cached)
    return cached


_touched: dict[str, float] = {}  # prefix -> when this process last recorded a use


def _touch(key: ApiKey) -> None:
    """Record use at minute resolution: one UPDATE per key a minute across all processes.

    The process-local memo spares the shared cache a round trip on every request; the cache's
    atomic add elects one process per minute to write.
    """
    now = time.monotonic()
    resolution = LAST_USED_RESOLUTION.total_seconds()
    if now - _touched.get(key.prefix, -resolution) < resolution:
        return
    _touched[key.prefix] = now
    if cache.add(f"apikey-used:{key.prefix}", 1, int(resolution)):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=clock.now())
