"""Per-key rate limiting: a token bucket in Redis, or in this process when there is no Redis.

Each API key has a bucket of `burst` tokens refilled at `rate` per second; a request takes one.
Without Redis (`make run`), each API process keeps its own buckets. If Redis fails, requests are
let through and the failure is logged: the limit protects the service, it must not take it down.
"""

import logging
import threading
import time
from dataclasses import dataclass

import redis

from timonier.redis_client import get_redis

logger = logging.getLogger(__name__)

_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0


class _LocalBuckets:
    def __init__(self):
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, rate: float, burst: float) -> Decision:
        now = time.monotonic()
        with self._lock:
            tokens, ts = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - ts) * rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return Decision(True)
            self._buckets[key] = (tokens, now)
            return Decision(False, max(1, int((1 - tokens) / rate + 0.999)))


_local = _LocalBuckets()
_scripts: dict[int, object] = {}


def _script(client: redis.Redis):
    if id(client) not in _scripts:
        _scripts[id(client)] = client.register_script(_BUCKET_SCRIPT)
    return _scripts[id(client)]


def take(key: str, *, rate: float, burst: float) -> Decision:
    """Take one token from the bucket `key`."""
    client = get_redis()
    if client is None:
        return _local.take(key, rate, burst)
    try:
        allowed, wait = _script(client)(keys=[f"ratelimit:{key}"], args=[rate, burst, time.time()])
    except redis.RedisError:
        logger.warning("rate limiter unavailable; letting the request through", exc_info=True)
        return Decision(True)
    if int(allowed):
        return Decision(True)
    return Decision(False, max(1, int(float(wait) + 0.999)))
