"""The one clock of the project: tests move time by patching `now`, code never calls timezone.now()."""

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    return timezone.now()
