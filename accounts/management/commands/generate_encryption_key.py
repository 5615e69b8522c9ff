from django.core.management.base import BaseCommand

from timonier.secrets import generate_key


class Command(BaseCommand):
    help = "Print a new Fernet key for ENCRYPTION_KEYS (put it first in the list, then run rotate_encryption_keys)."

    def handle(self, *args, **options) -> None:
        self.stdout.write(generate_key())
