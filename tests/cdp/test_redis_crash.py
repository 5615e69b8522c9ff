"""A crash of Redis never loses an accepted event.

Redis holds the broker, the rate-limit buckets and the key generation, but never the calls
themselves: the API stores them in the database before answering. This test runs the API, a
worker and the scheduler on a Redis of their own, kills it with SIGKILL while calls keep coming,
starts it again, and checks that every call answered 2xx is stored, once.
"""

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cdp.models import Event
from organizations.api_keys import api_key_create
from tests.factories import ProjectFactory
from tests.live import ApiServer, CeleryWorker, LiveProcess, free_port, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class RedisServer:
    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.folder), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, timeout=10, what=f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def test_redis_killed_mid_ingest_loses_no_accepted_call(live_db_env, tmp_path):
    if not live_db_env.get("REDIS_URL"):
        pytest.skip("runs against Redis (make test)")
    redis_server = RedisServer(tmp_path, free_port())
    redis_server.start()
    redis_url = f"redis://127.0.0.1:{redis_server.port}"
    env = {
        **live_db_env,
        "REDIS_URL": f"{redis_url}/0",
        "CELERY_BROKER_URL": f"{redis_url}/1",
        "TIMONIER_VAR_DIR": str(tmp_path / "var"),
    }
    project = ProjectFactory()
    _, key = api_key_create(project=project, name="k")
    api = ApiServer(env, tmp_path / "api.log")
    worker = CeleryWorker(env, tmp_path / "worker.log")
    beat = LiveProcess(
        "beat",
        [sys.executable, "-m", "celery", "-A", "timonier", "beat", "-l", "info", "-s", str(tmp_path / "beat")],
        env,
        tmp_path / "beat.log",
    )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    accepted: list[str] = []

    def send(count: int, phase: str) -> None:
        for n in range(count):
            message_id = f"{phase}-{n}"
            response = session.post(
                f"{api.url}/v1/track",
                json={"customer_id": f"u{n % 7}", "event": "purchase", "message_id": message_id},
                timeout=15,
            )
            if response.status_code == 202:
                accepted.append(message_id)

    try:
        api.wait_until(api.healthy, 30, "GET /health did not answer 200")
        worker.wait_until(worker.ready, 60, 'did not log "ready"')
        send(30, "before")
        redis_server.kill()
        started = time.monotonic()
        send(30, "during")
        assert time.monotonic() - started < 60  # answered promptly without Redis
        redis_server.start()  # same port, empty: queues, buckets and generation are gone
        send(30, "after")
        wait_for(
            lambda: Event.objects.filter(project=project).count() >= len(accepted),
            timeout=60,
            what="every accepted call to be stored once Redis is back",
        )
    finally:
        for process in (beat, worker, api):
            process.stop()
        redis_server.stop()
    assert len(accepted) == 90  # the API kept accepting: the calls' durability never depended on Redis
    stored = list(Event.objects.filter(project=project).values_list("message_id", flat=True))
    assert sorted(stored) == sorted(accepted)
