"""Limits on what one client may try: requests per address, and wrong codes per account and address.

Counters are fixed windows in Django's cache (Redis in production and tests, the file cache of
`make run`), keyed by the window's start, so every process of the platform shares them and
they expire by themselves. A fixed window lets a client spend up to twice a limit around a
window's edge; the limits are set with that in mind.

Why per account *and* address for wrong codes: a counter per account alone (django-otp's
ThrottlingMixin) lets anyone who knows an email lock its owner out by typing wrong codes. Here a
stranger only locks themselves out; the device's own, much higher, global ceiling
(`Authenticator.failure_count`) stops a brute force spread over many addresses.
"""

import hashlib
import ipaddress
import math
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from timonier import clock


def client_address(request: HttpRequest) -> str:
    """The client a request counts against; an IPv6 client counts as its /64,
    the block one host usually gets, so it cannot step around a limit address by address."""
    address = request.META.get("REMOTE_ADDR") or "unknown"
    if settings.BEHIND_PROXY:
        # The proxy appends the peer it saw: the last entry. Earlier ones are the client's own claims.
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").rsplit(",", 1)[-1].strip()
        address = forwarded[:64] or address  # an address is at most 45 characters
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True)
class Window:
    key: str
    ends_in: int  # seconds until the window closes (what Retry-After says)


def _window(name: str, subject: str, seconds: int) -> Window:
    now = clock.now().timestamp()
    start = int(now // seconds) * seconds
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]  # no email addresses in cache keys
    return Window(key=f"throttle:{name}:{digest}:{start}", ends_in=max(1, math.ceil(start + seconds - now)))


def _count(window: Window) -> int:
    return int(cache.get(window.key) or 0)


def _increment(window: Window, seconds: int) -> int:
    if cache.add(window.key, 1, timeout=seconds + 5):
        return 1
    try:
        return cache.incr(window.key)
    except ValueError:  # expired between add and incr
        cache.add(window.key, 1, timeout=seconds + 5)
        return 1


def request_allowed(*, name: str, address: str) -> int:
    """Count one request of `address` against the `RATE_LIMIT_<NAME>` setting.

    Returns 0 when allowed, else the seconds until the client may retry.
    """
    limit, seconds = getattr(settings, f"RATE_LIMIT_{name.upper()}")
    window = _window(name, address, seconds)
    if _increment(window, seconds) > limit:
        return window.ends_in
    return 0


def rate_limited_response(request: HttpRequest, retry_after: int) -> HttpResponse:
    retry_at = clock.now() + timedelta(seconds=retry_after)
    response = render(
        request, "accounts/rate_limited.html", {"retry_after": retry_after, "retry_at": retry_at}, status=429
    )
    response["Retry-After"] = str(retry_after)
    return response


def rate_limit(name: str):
    """Limit the POSTs of a view per client address (`RATE_LIMIT_<NAME>`): over it, 429 and Retry-After."""

    def decorator(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method == "POST":
                retry_after = request_allowed(name=name, address=client_address(request))
                if retry_after:
                    return rate_limited_response(request, retry_after)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def _code_failures_window(email: str, address: str) -> Window:
    return _window("code-failures", f"{email.lower()}|{address}", settings.LOGIN_CODE_FAILURE_WINDOW)


def code_failures_lock(*, email: str, address: str) -> int:
    """Seconds this client must wait before trying codes for this account again (0: it may)."""
    window = _code_failures_window(email, address)
    return window.ends_in if _count(window) >= settings.LOGIN_CODE_MAX_FAILURES else 0


def code_failure_record(*, email: str, address: str) -> None:
    _increment(_code_failures_window(email, address), settings.LOGIN_CODE_FAILURE_WINDOW)


def code_failures_clear(*, email: str, address: str) -> None:
    cache.delete(_code_failures_window(email, address).key)
