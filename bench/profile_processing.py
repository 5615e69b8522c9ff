"""Where the batch processor spends its time: `python bench/profile_processing.py`.

Starts a throwaway durable PostgreSQL, queues 50,000 track calls for 10,000 customers as the API
would (500 commands of 100), drains them once to create the customers, queues 50,000 more and
drains them under cProfile, then prints the rate and the 25 costliest functions by own time.
"""

import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from testenv import Postgres, free_ports  # noqa: E402

COMMANDS = 500
PER_COMMAND = 100
CUSTOMERS = 10_000


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="timonier-profile-"))
    os.chmod(folder, 0o755)
    (port,) = free_ports(1)
    postgres = Postgres(folder / "pg", port, durable=True)
    postgres.start()
    try:
        os.environ.update(
            DATABASE_URL=postgres.url,
            SECRET_KEY="profile-only",
            TIMONIER_VAR_DIR=str(folder / "var"),
            DJANGO_SETTINGS_MODULE="timonier.settings",
            LOG_LEVEL="WARNING",
            REDIS_URL="",
        )
        import django

        django.setup()
        from django.core.management import call_command

        from cdp import inbox, processing
        from cdp.messages import normalize_batch
        from organizations.models import Organization, Project
        from timonier import clock

        call_command("migrate", verbosity=0)
        inbox.wake = lambda *args, **kwargs: None  # no broker here: this process drains the inbox itself
        organization = Organization.objects.create(name="Profile", slug="profile")
        project = Project.objects.create(organization=organization, name="Profile", slug="profile")
        counter = iter(range(10**9))

        def queue() -> None:
            for _ in range(COMMANDS):
                batch = {
                    "batch": [
                        {
                            "type": "track",
                            "userId": f"user-{(n := next(counter)) % CUSTOMERS}",
                            "event": "purchase",
                            "properties": {"item": "T-Shirt", "amount": 29.99, "currency": "USD", "n": n},
                        }
                        for _ in range(PER_COMMAND)
                    ]
                }
                messages = normalize_batch(batch, received_at=clock.now(), max_items=PER_COMMAND)
                inbox.commands_enqueue(project_id=project.pk, messages=messages, received_at=clock.now())

        def drain() -> float:
            started = time.perf_counter()
            while processing.commands_process(project_id=project.pk).commands:
                pass
            return time.perf_counter() - started

        queue()
        created = drain()
        queue()
        profile = cProfile.Profile()
        profile.enable()
        elapsed = drain()
        profile.disable()
        events = COMMANDS * PER_COMMAND
        print(f"first pass (creates {CUSTOMERS:,} customers): {events / created:,.0f} events/s")
        print(f"second pass (known customers), profiled:      {events / elapsed:,.0f} events/s")
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    finally:
        postgres.stop()


if __name__ == "__main__":
    main()
