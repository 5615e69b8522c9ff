"""Who may see a platform page: a signed-in user whose session passed the authenticator."""

import json
from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse

from timonier.secrets import DecryptionError, decrypt, encrypt

RECOVERY_CODES_SESSION_KEY = "recovery_codes_once"


def verified_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user = request.user
        if not (user.is_authenticated and user.is_active and user.is_verified()):
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return wrapper


def recovery_codes_stash(request: HttpRequest, codes: list[str]) -> None:
    """Keep new recovery codes for the next page to show, encrypted (the session store is a table)."""
    request.session[RECOVERY_CODES_SESSION_KEY] = encrypt(json.dumps(codes))


def recovery_codes_pop(request: HttpRequest) -> list[str] | None:
    """Recovery codes to show once, right after they were generated; never again."""
    stashed = request.session.pop(RECOVERY_CODES_SESSION_KEY, None)
    if not isinstance(stashed, str):
        return None
    try:
        return json.loads(decrypt(stashed))
    except DecryptionError:
        return None
