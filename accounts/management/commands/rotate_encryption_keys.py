from django.core.management.base import BaseCommand, CommandError

from timonier import secrets


class Command(BaseCommand):
    help = (
        "Re-encrypt every secret at rest (TOTP seeds, webhook signing secrets) under the first key of "
        "ENCRYPTION_KEYS (or the key derived from SECRET_KEY). Run it after putting a new key first; "
        "once it succeeds the old keys (or SECRET_KEY_FALLBACKS) can be removed."
    )

    def handle(self, *args, **options) -> None:
        try:
            counts = secrets.encrypted_fields_rotate()
        except secrets.DecryptionError as exc:
            raise CommandError(f"{exc}. Nothing was changed: add the missing key to ENCRYPTION_KEYS.") from exc
        for label, count in counts.items():
            self.stdout.write(f"{label}: {count} re-encrypted")
