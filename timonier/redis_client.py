"""The process's one Redis client (a connection pool) for the API's hot path.

Django's cache creates a client object per call, which costs more than the round trip itself;
the rate limiter and the API-key lookup use this one instead. None without REDIS_URL.
"""

import redis
from django.conf import settings

_client: redis.Redis | None = None
_url: str | None = None


def get_redis() -> redis.Redis | None:
    global _client, _url
    if not settings.REDIS_URL:
        return None
    if _client is None or _url != settings.REDIS_URL:
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        _url = settings.REDIS_URL
    return _client
