"""Settings for Timonier.

Every value that differs between a laptop and production is an environment variable, read once
here and documented in `.env.example`. The defaults give the embedded setup of `make run`:
SQLite, a filesystem Celery broker and email printed to the console.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A developer's `.env` (created by `make run` from `.env.example`) fills what the shell left unset.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("TIMONIER_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY is not set (see .env.example)")
# Former SECRET_KEYs, newest first: links signed with them (verification, unsubscribe, click)
# keep working after a rotation, until they expire; and secrets encrypted under a key derived
# from them still open (timonier/secrets.py) until `manage.py rotate_encryption_keys`.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
# Fernet keys for secrets at rest, newest first (timonier/secrets.py); empty: derived from SECRET_KEY.
ENCRYPTION_KEYS = env.list("ENCRYPTION_KEYS", default=[])

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Which URL root this process serves: the platform UI (:3010) or the CDP API (:3030).
SERVICE = env.str("TIMONIER_SERVICE", default="platform")
_URLCONFS = {"platform": "timonier.urls_platform", "api": "timonier.urls_api"}
if SERVICE not in _URLCONFS:
    raise ImproperlyConfigured(f"TIMONIER_SERVICE must be one of {sorted(_URLCONFS)}, not {SERVICE!r}")
ROOT_URLCONF = _URLCONFS[SERVICE]

PLATFORM_URL = env.str("PLATFORM_URL", default="http://localhost:3010").rstrip("/")
API_URL = env.str("API_URL", default="http://localhost:3030").rstrip("/")
PLATFORM_PORT = env.int("PLATFORM_PORT", default=3010)
API_PORT = env.int("API_PORT", default=3030)

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_otp",  # its Device API; the devices are accounts.Authenticator and RecoveryCodeSet
    "accounts",
    "organizations",
    "cdp",
    "segments",
    "workflows",
    "emails",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "timonier.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if SERVICE == "api":
    # The API authenticates by key on every request: no sessions, CSRF or messages to pay for.
    MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "cdp.api.http.CorsMiddleware"]
    # check --deploy's advice for pages in a browser: the API answers JSON to keys, never HTML to a
    # session, so there is nothing to frame and no cookie for a cross-site request to ride on.
    SILENCED_SYSTEM_CHECKS = ["security.W002", "security.W003"]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "timonier.wsgi.application"

# SQLite is the embedded default. WAL lets the UI, the API and the worker read while one writes;
# the busy timeout makes a writer wait for the lock instead of failing; IMMEDIATE transactions take
# the write lock up front, so a read-then-write transaction cannot deadlock on the upgrade.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'timonier.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
        }
    )
    # A file, not the in-memory default: tests of concurrent requests need WAL and the busy timeout.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "organizations:selector"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"

# Sessions and cookies: HttpOnly, SameSite, and Secure once served over HTTPS.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# Behind a reverse proxy that terminates TLS (the README's production setup): trust its
# X-Forwarded-Proto, redirect plain HTTP to HTTPS, tell browsers to use HTTPS only (HSTS) and keep
# cookies off plain HTTP. `manage.py check --deploy` is clean with these (tests/test_deploy_defaults.py).
BEHIND_PROXY = env.bool("BEHIND_PROXY", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_PROXY else None
SECURE_SSL_REDIRECT = BEHIND_PROXY
SECURE_REDIRECT_EXEMPT = [r"^health$"]  # load balancers' health checks speak plain HTTP to the proxy's backend
# Sent on HTTPS responses only; 0 turns HSTS off (try a few minutes first: browsers remember it).
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if BEHIND_PROXY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True  # allows submitting the domain to browsers' preload list; sending it commits to nothing
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=BEHIND_PROXY or PLATFORM_URL.startswith("https://"))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=14 * 24 * 3600)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Every platform page (timonier/csp.py); a page with its own policy (the email designer and
# preview) keeps it. No inline script anywhere: templates load their JavaScript from static/.
# Style attributes stay allowed (the templates use a few; they cannot run script or load anything).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

# Email: console by default so a developer reads the verification link in the `make run` output.
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Timonier <no-reply@localhost>")

# Accounts.
EMAIL_VERIFICATION_MAX_AGE = env.int("EMAIL_VERIFICATION_MAX_AGE", default=24 * 3600)
INVITATION_MAX_AGE = env.int("INVITATION_MAX_AGE", default=7 * 24 * 3600)
# open: anyone may sign up; invite: only invited addresses (and the first user of a fresh instance).
SIGNUP_MODE = env.str("SIGNUP_MODE", default="open")
if SIGNUP_MODE not in ("open", "invite"):
    raise ImproperlyConfigured(f"SIGNUP_MODE must be open or invite, not {SIGNUP_MODE!r}")
OTP_TOTP_ISSUER = "Timonier"
OTP_TOTP_TOLERANCE = 1  # accept the previous and the next 30 s step: clock drift of a phone
TOTP_SETUP_MAX_FAILURES = 5
TOTP_SETUP_MAX_AGE = 30 * 60  # seconds a setup secret (shown, not yet confirmed) stays in the session
RECOVERY_CODE_COUNT = 10
# Wrong codes one client may type for one account per window (accounts/throttling.py), and the
# much higher ceiling of one authenticator from all clients together (a brute force spread over
# many addresses: 50 a day leave it ~1.5e-4 a day of guessing a 6-digit code with ±1 step).
LOGIN_CODE_MAX_FAILURES = 5
LOGIN_CODE_FAILURE_WINDOW = 15 * 60
AUTHENTICATOR_MAX_FAILURES = 50
AUTHENTICATOR_FAILURE_WINDOW = 24 * 3600


def _rate(name: str, default: str) -> tuple[int, int]:
    """A "COUNT/SECONDS" rate limit from the environment, as (count, seconds)."""
    value = env.str(name, default=default)
    count, _, seconds = value.partition("/")
    if not (count.isdigit() and seconds.isdigit() and int(count) > 0 and int(seconds) > 0):
        raise ImproperlyConfigured(f"{name} must look like COUNT/SECONDS (e.g. {default}), not {value!r}")
    return int(count), int(seconds)


# POSTs one client address may send per window to the login, code (login and setup), signup and
# resend forms; over it 429 with Retry-After (accounts/throttling.py).
RATE_LIMIT_LOGIN = _rate("RATE_LIMIT_LOGIN", "30/300")
RATE_LIMIT_LOGIN_CODE = _rate("RATE_LIMIT_LOGIN_CODE", "30/300")
RATE_LIMIT_SIGNUP = _rate("RATE_LIMIT_SIGNUP", "10/600")
RATE_LIMIT_RESEND = _rate("RATE_LIMIT_RESEND", "10/600")

# Celery. The broker defaults to kombu's filesystem transport: a real worker, no server.
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
CELERY_BROKER_DIR = VAR_DIR / "broker"
CELERY_RESULT_BACKEND = None
CELERY_TASK_MAX_SECONDS = env.int("CELERY_TASK_MAX_SECONDS", default=300)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "cache"}
        if REDIS_URL
        # Without Redis, a file cache is what the UI, API and worker processes can share (an API
        # key revoked in the UI must stop working in the API at once).
        else {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(VAR_DIR / "cache")}
    )
}

# CDP API: default requests per second per API key (a project can set its own), and how many
# seconds of that rate a burst may use at once.
API_RATE_LIMIT = env.int("API_RATE_LIMIT", default=3000)
API_RATE_BURST_SECONDS = env.int("API_RATE_BURST_SECONDS", default=2)
# Requests with a missing, unknown or revoked key one client address may send per minute before
# it gets 429 (cdp/ratelimit.py); the address as accounts/throttling.py's client_address reads it.
API_BAD_KEY_LIMIT = env.int("API_BAD_KEY_LIMIT", default=20)
if SERVICE == "api" and DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    # No SELECT 1 before each request's first query: on the ingest path it cost as much as the
    # INSERT (bench/ingest.py). The inbox INSERT reconnects once on a dead connection
    # (cdp/inbox.py); any other query that meets one fails that request, and Django closes the
    # connection at the request's end, so the next one reconnects.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
# Ingest: partitions of each project's inbox (cdp/processing.py), each drained by one worker at a
# time, so up to this many workers share one project. Change it only with an empty inbox: calls
# already queued stay in the partition they were given.
INGEST_PARTITIONS = env.int("INGEST_PARTITIONS", default=8)
if not 1 <= INGEST_PARTITIONS <= 1024:
    raise ImproperlyConfigured(f"INGEST_PARTITIONS must be between 1 and 1024, not {INGEST_PARTITIONS}")

# Segments: how often segments with a relative time window are re-evaluated (customers age out
# of "purchased in the last 7 days"), and how often every segment is rebuilt from scratch.
SEGMENT_WINDOW_REFRESH_SECONDS = env.int("SEGMENT_WINDOW_REFRESH_SECONDS", default=60)
SEGMENT_RECONCILE_SECONDS = env.int("SEGMENT_RECONCILE_SECONDS", default=3600)

# Workflows' Webhook steps (workflows/addresses.py, workflows/webhooks.py): hosts (`host` or
# `host:port`) a webhook may reach on any address and port, past the SSRF check (an operator's own
# receiver on the internal network); the timeout of one attempt; attempts before the failure path.
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=6)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
