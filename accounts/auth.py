"""Who may see a platform page: a signed-in user whose session passed the authenticator."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse

RECOVERY_CODES_SESSION_KEY = "recovery_codes_once"


def verified_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user = request.user
        if not (user.is_authenticated and user.is_active and user.is_verified()):
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return wrapper


def recovery_codes_pop(request: HttpRequest) -> list[str] | None:
    """Recovery codes to show once, right after they were generated; never again."""
    return request.session.pop(RECOVERY_CODES_SESSION_KEY, None)
