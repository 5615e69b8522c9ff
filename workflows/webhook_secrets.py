"""A project's webhook signing secret: made on first use, revealed to its people, rotated.

Receivers verify with the `whsec_…` secret shown in the project's settings. Rotating makes a new
one and keeps the previous signing too, until `keep_previous_for` has passed: every request in
that window carries both signatures, so a receiver switched to the new secret and one not yet
switched both accept it (the Standard Webhooks way to rotate without dropping a request).

Secrets are stored encrypted (timonier.secrets); they are never logged.
"""

import base64
import secrets as random_secrets
from datetime import timedelta

from django.db import IntegrityError, transaction

from organizations.models import Project
from timonier import clock
from timonier.secrets import decrypt, encrypt

from .models import WebhookSecret

# Standard Webhooks asks for 24 to 64 bytes of randomness; 32 is what the reference libraries make.
SECRET_BYTES = 32


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def webhook_signing_secrets(*, project: Project) -> list[str]:
    """The secrets to sign with now: the current one, then the previous one while it lasts."""
    row = _secret_row(project)
    signing = [decrypt(row.secret)]
    if row.previous_secret and row.previous_expires_at and row.previous_expires_at > clock.now():
        signing.append(decrypt(row.previous_secret))
    return signing


def webhook_secret_reveal(*, project: Project) -> str:
    """The current secret, for the project's people to configure their receiver with."""
    return decrypt(_secret_row(project).secret)


def webhook_secret_rotate(*, project: Project, keep_previous_for: timedelta = timedelta(hours=24)) -> str:
    """A new current secret; the one it replaces keeps signing for `keep_previous_for`."""
    _secret_row(project)
    new = new_signing_secret()
    now = clock.now()
    with transaction.atomic():
        # Locked: two rotations at once must not both keep the same "previous" and lose a secret.
        row = WebhookSecret.objects.select_for_update().get(project=project)
        row.previous_secret = row.secret
        row.previous_expires_at = now + keep_previous_for
        row.secret = encrypt(new)
        row.rotated_at = now
        row.save(update_fields=["secret", "previous_secret", "previous_expires_at", "rotated_at"])
    return new


def _secret_row(project: Project) -> WebhookSecret:
    row = WebhookSecret.objects.filter(project=project).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction survives a lost race
            return WebhookSecret.objects.create(project=project, secret=encrypt(new_signing_secret()))
    except IntegrityError:
        # Another worker made it first: everyone must sign with the same one.
        return WebhookSecret.objects.get(project=project)
