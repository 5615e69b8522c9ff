import time

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_otp import login as otp_login
from django_otp.plugins.otp_static.models import StaticDevice

from . import services
from .auth import RECOVERY_CODES_SESSION_KEY, recovery_codes_pop, verified_login_required
from .forms import EmailForm, LoginCodeForm, SignupForm, TOTPCodeForm
from .models import User

LOGIN_SESSION_KEY = "login_user_id"
NEXT_SESSION_KEY = "login_next"
SIGNUP_EMAIL_SESSION_KEY = "signup_email"
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


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("organizations:selector")
    _remember_next(request)
    form = SignupForm(request.POST or None, initial={"email": request.GET.get("email", "")})
    if request.method == "POST" and form.is_valid():
        try:
            services.user_signup(**form.cleaned_data)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                for error in errors:
                    form.add_error(field, error)
        else:
            request.session[SIGNUP_EMAIL_SESSION_KEY] = form.cleaned_data["email"]
            return redirect("accounts:signup_sent")
    return render(request, "accounts/signup.html", {"form": form})


def signup_sent(request: HttpRequest) -> HttpResponse:
    email = request.session.get(SIGNUP_EMAIL_SESSION_KEY)
    if not email:
        return redirect("accounts:signup")
    return render(request, "accounts/signup_sent.html", {"email": email})


def verification_resend(request: HttpRequest) -> HttpResponse:
    form = EmailForm(request.POST or None, initial={"email": request.session.get(SIGNUP_EMAIL_SESSION_KEY, "")})
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            form.add_error("email", "No account uses this email. Sign up first.")
        elif user.is_active:
            form.add_error("email", "This account is already verified. Log in with your authenticator app.")
        else:
            try:
                services.verification_send(user=user)
            except ValidationError as exc:
                form.add_error("email", exc.message_dict["email"][0])
            else:
                request.session[SIGNUP_EMAIL_SESSION_KEY] = email
                messages.success(request, f"We sent a new verification link to {email}.")
                return redirect("accounts:signup_sent")
    return render(request, "accounts/verification_resend.html", {"form": form})


def _setup_state(request: HttpRequest, verification_id: str) -> dict:
    """The authenticator being set up through this link, kept only in this session."""
    key = f"totp_setup:{verification_id}"
    state = request.session.get(key)
    if state is None:
        state = {"secret": services.totp_secret_generate(), "failures": 0, "locked_until": 0}
        request.session[key] = state
    return state


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
    session_key = f"totp_setup:{verification.pk}"
    state = _setup_state(request, str(verification.pk))
    form = TOTPCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if state["locked_until"] > time.time():
            wait = int(state["locked_until"] - time.time()) + 1
            form.add_error("code", f"Too many wrong codes. Try again in {wait} seconds.")
        else:
            try:
                codes = services.totp_setup_confirm(
                    verification=verification, secret_hex=state["secret"], code=form.cleaned_data["code"]
                )
            except services.VerificationError:
                request.session.pop(session_key, None)
                messages.error(request, VERIFICATION_MESSAGES["used"])
                return redirect("accounts:login")
            if codes is None:
                state["failures"] += 1
                if state["failures"] >= settings.TOTP_SETUP_MAX_FAILURES:
                    # Locked 30 s after the fifth wrong code, doubling with each further one.
                    lock = 30 * 2 ** (state["failures"] - settings.TOTP_SETUP_MAX_FAILURES)
                    state["locked_until"] = time.time() + lock
                request.session[session_key] = state
                form.add_error("code", "That code is not valid. Check the time on your phone and try the current code.")
            else:
                request.session.pop(session_key, None)
                user = verification.user
                user.refresh_from_db()
                login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
                otp_login(request, user.totpdevice_set.get(confirmed=True))
                request.session[RECOVERY_CODES_SESSION_KEY] = codes
                return redirect(request.session.pop(NEXT_SESSION_KEY, None) or "organizations:selector")
    uri = services.totp_config_url(user=verification.user, secret_hex=state["secret"])
    context = {
        "form": form,
        "email": verification.user.email,
        "qr_svg": segno.make(uri, error="m").svg_inline(scale=5, title="Authenticator QR code"),
        "otpauth_uri": uri,
        "secret_b32": services.b32_secret(state["secret"]),
    }
    return render(request, "accounts/verify.html", context)


def login_email(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated and request.user.is_verified():
        return redirect("organizations:selector")
    _remember_next(request)
    form = EmailForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = User.objects.filter(email__iexact=form.cleaned_data["email"]).first()
        if user is None:
            form.add_error("email", "No account uses this email. Sign up first.")
        elif not user.is_active:
            form.add_error(
                "email", "This account has not finished setup. Open the link in your verification email, or resend it."
            )
        else:
            request.session[LOGIN_SESSION_KEY] = user.pk
            return redirect("accounts:login_code")
    return render(request, "accounts/login.html", {"form": form})


def login_code(request: HttpRequest) -> HttpResponse:
    user = User.objects.filter(pk=request.session.get(LOGIN_SESSION_KEY), is_active=True).first()
    if user is None:
        return redirect("accounts:login")
    form = LoginCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        result = services.login_code_verify(user=user, code=form.cleaned_data["code"])
        if result.locked_seconds:
            form.add_error("code", f"Too many wrong codes. Try again in {result.locked_seconds} seconds.")
        elif result.device is None:
            form.add_error("code", "That code is not valid, or it was already used. Wait for the next code.")
        else:
            nxt = request.session.pop(NEXT_SESSION_KEY, None)
            login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])  # rotates the session key
            otp_login(request, result.device)
            if isinstance(result.device, StaticDevice):
                remaining = services.recovery_codes_remaining(user=user)
                messages.warning(request, f"You signed in with a recovery code. {remaining} recovery codes remain.")
            return redirect(nxt or "organizations:selector")
    return render(request, "accounts/login_code.html", {"form": form, "email": user.email})


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("accounts:login")


@verified_login_required
def account(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and request.POST.get("action") == "regenerate":
        request.session[RECOVERY_CODES_SESSION_KEY] = services.recovery_codes_regenerate(user=request.user)
        messages.success(request, "New recovery codes were generated; the old ones no longer work.")
        return redirect(reverse("accounts:account"))
    context = {
        "recovery_codes": recovery_codes_pop(request),
        "remaining": services.recovery_codes_remaining(user=request.user),
    }
    return render(request, "accounts/account.html", context)
