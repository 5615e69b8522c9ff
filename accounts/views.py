import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_otp import login as otp_login

from timonier import clock
from timonier.secrets import DecryptionError, decrypt, encrypt

from . import services
from .auth import recovery_codes_pop, recovery_codes_stash, verified_login_required
from .forms import EmailForm, LoginCodeForm, SignupForm, TOTPCodeForm
from .models import RecoveryCodeSet
from .throttling import client_address, rate_limit

LOGIN_EMAIL_SESSION_KEY = "login_email"
NEXT_SESSION_KEY = "login_next"
SIGNUP_EMAIL_SESSION_KEY = "signup_email"
SETUP_SESSION_PREFIX = "totp_setup:"
VERIFICATION_MESSAGES = {
    "invalid": "This verification link is not valid. Check that you copied the whole link, or request a new one.",
    "expired": "This verification link has expired. Request a new one below.",
    "used": "This verification link has already been used. Log in with your authenticator app.",
}


def _safe_next(request: HttpRequest, candidate: str | None) -> str | None:
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return None


def _remember_next(request: HttpRequest) -> None:
    nxt = _safe_next(request, request.GET.get("next"))
    if nxt:
        request.session[NEXT_SESSION_KEY] = nxt


@rate_limit("signup")
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("organizations:selector")
    _remember_next(request)
    form = SignupForm(request.POST or None, initial={"email": request.GET.get("email", "")})
    if request.method == "POST" and form.is_valid():
        # The same answer for a new address, a known one and one SIGNUP_MODE refuses: the email says which.
        services.signup_request(**form.cleaned_data)
        request.session[SIGNUP_EMAIL_SESSION_KEY] = form.cleaned_data["email"]
        return redirect("accounts:signup_sent")
    return render(request, "accounts/signup.html", {"form": form})


def signup_sent(request: HttpRequest) -> HttpResponse:
    email = request.session.get(SIGNUP_EMAIL_SESSION_KEY)
    if not email:
        return redirect("accounts:signup")
    context = {"email": email, "invite_only": settings.SIGNUP_MODE == "invite"}
    return render(request, "accounts/signup_sent.html", context)


@rate_limit("resend")
def verification_resend(request: HttpRequest) -> HttpResponse:
    form = EmailForm(request.POST or None, initial={"email": request.session.get(SIGNUP_EMAIL_SESSION_KEY, "")})
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        services.verification_resend_request(email=email)
        request.session[SIGNUP_EMAIL_SESSION_KEY] = email
        messages.success(request, f"If {email} is waiting for verification, we sent it a new link.")
        return redirect("accounts:signup_sent")
    return render(request, "accounts/verification_resend.html", {"form": form})


def _setup_state(request: HttpRequest, verification_id: str) -> dict:
    """The authenticator being set up through this link, kept only in this session.

    The secret is kept encrypted and for TOTP_SETUP_MAX_AGE at most (then a new one is shown),
    and setups of this session older than that are dropped, so an abandoned setup does not
    leave a seed in the session store.
    """
    now = clock.now().timestamp()
    for key in [k for k in request.session.keys() if k.startswith(SETUP_SESSION_PREFIX)]:
        if now - request.session[key].get("started", 0) > settings.TOTP_SETUP_MAX_AGE:
            del request.session[key]
    key = SETUP_SESSION_PREFIX + verification_id
    state = request.session.get(key)
    try:
        secret = decrypt(state["secret"]) if state else None
    except DecryptionError:  # encrypted under a key since dropped from ENCRYPTION_KEYS: start over
        secret = None
    if secret is None:
        secret = services.totp_secret_generate()
        state = {"secret": encrypt(secret), "started": now, "failures": 0, "locked_until": 0}
        request.session[key] = state
    return {**state, "secret": secret}


def _setup_state_save(request: HttpRequest, verification_id: str, state: dict) -> None:
    request.session[SETUP_SESSION_PREFIX + verification_id] = {**state, "secret": encrypt(state["secret"])}


@rate_limit("login_code")
def verify(request: HttpRequest, token: str) -> HttpResponse:
    try:
        verification = services.verification_check(token=token)
    except services.VerificationError as exc:
        form = EmailForm(initial={"email": exc.user.email if exc.user else ""})
        return render(
            request,
            "accounts/verify_failed.html",
            {"message": VERIFICATION_MESSAGES[exc.reason], "reason": exc.reason, "form": form},
            status=410 if exc.reason in ("expired", "used") else 400,
        )
    verification_id = str(verification.pk)
    state = _setup_state(request, verification_id)
    form = TOTPCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        now = clock.now().timestamp()
        if state["locked_until"] > now:
            wait = int(state["locked_until"] - now) + 1
            form.add_error("code", f"Too many wrong codes. Try again in {wait} seconds.")
        else:
            try:
                codes = services.totp_setup_confirm(
                    verification=verification, secret_hex=state["secret"], code=form.cleaned_data["code"]
                )
            except services.VerificationError:
                request.session.pop(SETUP_SESSION_PREFIX + verification_id, None)
                messages.error(request, VERIFICATION_MESSAGES["used"])
                return redirect("accounts:login")
            if codes is None:
                state["failures"] += 1
                if state["failures"] >= settings.TOTP_SETUP_MAX_FAILURES:
                    # Locked 30 s after the fifth wrong code, doubling with each further one.
                    lock = 30 * 2 ** (state["failures"] - settings.TOTP_SETUP_MAX_FAILURES)
                    state["locked_until"] = now + lock
                _setup_state_save(request, verification_id, state)
                form.add_error("code", "That code is not valid. Check the time on your phone and try the current code.")
            else:
                request.session.pop(SETUP_SESSION_PREFIX + verification_id, None)
                user = verification.user
                user.refresh_from_db()
                login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
                otp_login(request, user.authenticator_set.get(confirmed=True))
                recovery_codes_stash(request, codes)
                return redirect(request.session.pop(NEXT_SESSION_KEY, None) or "organizations:selector")
    uri = services.totp_config_url(user=verification.user, secret_hex=state["secret"])
    context = {
        "form": form,
        "email": verification.user.email,
        "qr_svg": segno.make(uri, error="m").svg_inline(scale=5, title="Authenticator QR code"),
        "otpauth_uri": uri,
        "secret_b32": services.b32_secret(state["secret"]),
    }
    response = render(request, "accounts/verify.html", context)
    response["Cache-Control"] = "no-store"  # the page shows the secret: no copy in any cache
    return response


@rate_limit("login")
def login_email(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated and request.user.is_verified():
        return redirect("organizations:selector")
    _remember_next(request)
    form = EmailForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        # Every address goes on to the code page, with or without an account: no enumeration.
        request.session[LOGIN_EMAIL_SESSION_KEY] = form.cleaned_data["email"]
        return redirect("accounts:login_code")
    return render(request, "accounts/login.html", {"form": form})


@rate_limit("login_code")
def login_code(request: HttpRequest) -> HttpResponse:
    email = request.session.get(LOGIN_EMAIL_SESSION_KEY)
    if not email:
        return redirect("accounts:login")
    form = LoginCodeForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        code, address = form.cleaned_data["code"], client_address(request)
        result = services.login_code_verify(email=email, code=code, address=address)
        if result.locked_seconds:
            status = 429
            if result.locked_for_everyone:
                form.add_error(
                    "code",
                    "Too many wrong codes were entered for this account. Sign in with one of your recovery "
                    f"codes, or try your authenticator again in {result.locked_seconds} seconds.",
                )
            else:
                form.add_error(
                    "code",
                    f"Too many wrong codes. Try again in {result.locked_seconds} seconds, or enter a recovery code.",
                )
        elif result.device is None:
            form.add_error("code", "That code is not valid, or it was already used. Wait for the next code.")
        else:
            nxt = request.session.pop(NEXT_SESSION_KEY, None)
            request.session.pop(LOGIN_EMAIL_SESSION_KEY, None)
            login(request, result.user, backend=settings.AUTHENTICATION_BACKENDS[0])  # rotates the session key
            otp_login(request, result.device)
            if isinstance(result.device, RecoveryCodeSet):
                remaining = services.recovery_codes_remaining(user=result.user)
                messages.warning(request, f"You signed in with a recovery code. {remaining} recovery codes remain.")
            return redirect(nxt or "organizations:selector")
    response = render(request, "accounts/login_code.html", {"form": form, "email": email}, status=status)
    if status == 429:
        response["Retry-After"] = str(result.locked_seconds)
    return response


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("accounts:login")


@verified_login_required
def account(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and request.POST.get("action") == "regenerate":
        recovery_codes_stash(request, services.recovery_codes_regenerate(user=request.user))
        messages.success(request, "New recovery codes were generated; the old ones no longer work.")
        return redirect(reverse("accounts:account"))
    context = {
        "recovery_codes": recovery_codes_pop(request),
        "remaining": services.recovery_codes_remaining(user=request.user),
    }
    return render(request, "accounts/account.html", context)
