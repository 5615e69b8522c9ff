"""Rate limits of the API, in Redis, or in this process when there is no Redis.

Per key: each API key has a bucket of `burst` tokens refilled at `rate` per second; a request
takes one. The same round trip can read one more key (`take(..., read=...)`): the API reads the
API keys' revocation generation with it, so a request with a remembered key makes one round trip.

Per client address, on bad keys: an address that sent `limit` requests with a missing, unknown or
revoked key in the current minute is refused until the minute ends, before its key is looked up,
so guessing keys costs a flood nothing but 429s (and the database no queries). A fixed window,
counted by INCR: at most twice the limit across a window's edge, which is plenty against guessing
238-bit keys and needs one round trip. Requests with a good key pay no round trip for it: a process
checks an address only once it has itself seen a bad key from it this minute, so across N
processes a flood gets at most N failures past the limit.

Without Redis (`make run`), each API process keeps its own counts. If Redis fails, requests are
let through and the failure is logged: the limits protect the service, they must not take it down.
"""

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis

from timonier import clock
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
local read = false
if KEYS[2] then
  read = redis.call('GET', KEYS[2])
end
return {allowed, tostring(wait), read}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0
    read_done: bool = False  # whether `read` was read (Redis answered); then its value:
    read: bytes | None = None


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


def _run_script(client: redis.Redis, keys: list[str], args: list):
    """EVALSHA as redis-py's Script would send it (and SCRIPT LOAD once the server forgot it), without
    its wrapping: a third of the CPU of the request's one round trip (measured, redis-py 8)."""
    script = _script(client)
    try:
        return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        script.sha = client.script_load(_BUCKET_SCRIPT)
        return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


def take(key: str, *, rate: float, burst: float, read: str | None = None) -> Decision:
    """Take one token from the bucket `key`; with `read`, also GET that Redis key in the same
    round trip (`read_done` is False without Redis or when it failed: the caller reads it itself)."""
    client = get_redis()
    if client is None:
        return _local.take(key, rate, burst)
    keys = [f"ratelimit:{key}"] if read is None else [f"ratelimit:{key}", read]
    try:
        allowed, wait, value = _run_script(client, keys, [rate, burst, time.time()])
    except redis.RedisError:
        logger.warning("rate limiter unavailable; letting the request through", exc_info=True)
        return Decision(True)
    done = read is not None
    if int(allowed):
        return Decision(True, read_done=done, read=value)
    return Decision(False, max(1, int(float(wait) + 0.999)), read_done=done, read=value)


BAD_KEY_WINDOW_SECONDS = 60
_BAD_KEY_PREFIX = "badkeys:"
_MAX_LOCAL_ADDRESSES = 100_000  # a flood from many addresses must not grow the memory without bound


class _LocalCounts:
    """Bad-key counts per address of the current window: the store without Redis, and with Redis
    the memo of the addresses this process saw fail (only those are checked in Redis)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # address -> (window, count)

    def count(self, address: str, window: int) -> int:
        found = self._counts.get(address)
        return found[1] if found is not None and found[0] == window else 0

    def add(self, address: str, window: int) -> None:
        with self._lock:
            if len(self._counts) > _MAX_LOCAL_ADDRESSES:
                self._counts = {a: c for a, c in self._counts.items() if c[0] == window}
                if len(self._counts) > _MAX_LOCAL_ADDRESSES:
                    self._counts.clear()
            self._counts[address] = (window, self.count(address, window) + 1)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


_bad_keys = _LocalCounts()


def _window() -> tuple[int, int]:
    """The current window's number and the seconds until it ends (clock.now(), so tests move it)."""
    now = clock.now().timestamp()
    window = int(now // BAD_KEY_WINDOW_SECONDS)
    return window, max(1, math.ceil((window + 1) * BAD_KEY_WINDOW_SECONDS - now))


def bad_keys_check(address: str, *, limit: int) -> Decision:
    """Whether `address` may still try a key: refused once it sent `limit` bad keys this minute."""
    window, retry_after = _window()
    seen_here = _bad_keys.count(address, window)
    client = get_redis()
    if client is None or not seen_here:
        count = seen_here
    else:
        try:
            count = int(client.get(f"{_BAD_KEY_PREFIX}{window}:{address}") or 0)
        except redis.RedisError:
            logger.warning("rate limiter unavailable; letting the request through", exc_info=True)
            return Decision(True)
    return Decision(True) if count < limit else Decision(False, retry_after)


def bad_key_record(address: str) -> None:
    """Count a request from `address` with a missing, unknown or revoked key."""
    window, _ = _window()
    _bad_keys.add(address, window)
    client = get_redis()
    if client is None:
        return
    key = f"{_BAD_KEY_PREFIX}{window}:{address}"
    try:
        client.pipeline().incr(key).expire(key, BAD_KEY_WINDOW_SECONDS * 2).execute()
    except redis.RedisError:
        logger.warning("rate limiter unavailable; a bad key went uncounted", exc_info=True)


def bad_keys_reset() -> None:
    """Forget every address's bad keys (an operator unblocking an address at once; tests)."""
    _bad_keys.clear()
    client = get_redis()
    if client is not None:
        keys = list(client.scan_iter(match=f"{_BAD_KEY_PREFIX}*", count=1000))
        if keys:
            client.delete(*keys)
