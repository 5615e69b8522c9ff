"""API keys: creation, revocation and the lookup every API request makes.

A key reads `tk_` + 40 base62 characters. Its first 11 characters are the stored prefix that
finds the row; the rest is compared as a SHA-256 digest in constant time.

Each API process keeps the keys it has looked up in memory, stamped with a *generation*: a
counter in Redis (the shared cache without Redis) that every creation and revocation bumps.
A request reads the counter (one GET, or with the API's rate limit in its one Redis round trip:
`generation` below) and trusts its memory only if the generation is the same, so a revoked key is
refused by every process from the next request on, without a database query per request.
`last_used_at` is written at most once a minute per key.

A key has a scope (`ApiKey.Scope`): a *write* key is public (analytics.js puts it in page source)
and can only send calls; a *secret* key can do everything a write key can, and also read
customers and events, erase, and manage segments and workflows.
"""

import hashlib
import hmac
import secrets
import string
import time
from datetime import timedelta

import redis
from django.core.cache import cache
from django.db import IntegrityError, transaction

from timonier import clock
from timonier.redis_client import get_redis

from .models import ApiKey, Project

KEY_PREFIX = "tk_"
PREFIX_LENGTH = 11
SECRET_ALPHABET = string.ascii_letters + string.digits
MEMORY_SECONDS = 300  # bound on how stale a remembered project (its rate limit) may get
LAST_USED_RESOLUTION = timedelta(minutes=1)
GENERATION_KEY = "apikeys:generation"


def _hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


_remembered: dict[str, tuple[ApiKey | None, int, float]] = {}  # prefix -> (key, generation, when)


def _generation() -> int | None:
    """The current generation, or None if it cannot be read (then nothing is trusted)."""
    client = get_redis()
    try:
        value = client.get(GENERATION_KEY) if client is not None else cache.get(GENERATION_KEY)
    except redis.RedisError:
        return None
    return int(value or 0)


def generation_bump() -> None:
    """Invalidate every process's remembered keys (after a key or its project changed)."""
    client = get_redis()
    if client is not None:
        client.incr(GENERATION_KEY)
        return
    if not cache.add(GENERATION_KEY, 1, timeout=None):
        cache.incr(GENERATION_KEY)


def api_key_create(
    *, project: Project, name: str, scope: str = ApiKey.Scope.SECRET, created_by=None
) -> tuple[ApiKey, str]:
    """Create a key and return it with the raw key, which is never stored nor shown again."""
    if scope not in ApiKey.Scope.values:
        raise ValueError(f"scope: must be one of {', '.join(ApiKey.Scope.values)}, not {scope!r}")
    for _ in range(5):
        raw = KEY_PREFIX + "".join(secrets.choice(SECRET_ALPHABET) for _ in range(40))
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    project=project,
                    name=name,
                    scope=scope,
                    prefix=raw[:PREFIX_LENGTH],
                    key_hash=_hash(raw),
                    created_by=created_by,
                )
            generation_bump()
            return key, raw
        except IntegrityError:  # prefix collision: 62**8 makes this rare; draw again
            continue
    raise RuntimeError("could not draw a unique API key prefix")


def api_key_allows(api_key: ApiKey, scope: str) -> bool:
    """Whether the key may call an endpoint that needs `scope`: a secret key may call them all."""
    return scope == ApiKey.Scope.WRITE or api_key.scope == ApiKey.Scope.SECRET


def api_key_revoke(*, api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=clock.now())
    generation_bump()


def generation_parse(value: bytes | str | None) -> int:
    """The generation from GENERATION_KEY's raw value (a caller that read it in its own round trip)."""
    return int(value or 0)


def api_key_remembered(raw_key: str) -> ApiKey | None:
    """The key this process remembers for a raw key's prefix, checked for nothing (neither its
    secret, its generation nor its age): what a caller may use before authenticating, such as the
    rate limit of its project, never to let a request in."""
    remembered = _remembered.get(raw_key[:PREFIX_LENGTH]) if raw_key else None
    return remembered[0] if remembered is not None else None


def api_key_authenticate(raw_key: str, *, generation: int | None = None) -> ApiKey | None:
    """The active key a raw key belongs to, with its project loaded; None if unknown or revoked.

    `generation`: GENERATION_KEY's current value if the caller has just read it (see
    generation_parse); otherwise it is read here."""
    if not raw_key or not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 100:
        return None
    prefix = raw_key[:PREFIX_LENGTH]
    if generation is None:
        generation = _generation()
    remembered = _remembered.get(prefix)
    if (
        remembered is not None
        and generation is not None
        and remembered[1] == generation
        and time.monotonic() - remembered[2] < MEMORY_SECONDS
    ):
        cached = remembered[0]
    else:
        cached = ApiKey.objects.select_related("project__organization").filter(prefix=prefix).first()
        if generation is not None:
            if len(_remembered) > 10_000:  # random garbage keys must not grow it without bound
                _remembered.clear()
            _remembered[prefix] = (cached, generation, time.monotonic())
    if cached is None or cached.revoked_at is not None:
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
