"""The cost of one ingest request, counted on the real servers: Redis round trips, SQL statements,
and the group commit that lets concurrent requests of one API process share one INSERT."""

import shutil
import socket
import subprocess
import sys
import threading

import orjson
import psycopg
import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from cdp import inbox
from cdp.messages import normalize
from cdp.models import Command
from organizations.api_keys import api_key_create, api_key_revoke, generation_bump
from organizations.models import ApiKey
from tests.factories import ProjectFactory
from tests.live import free_port, wait_for
from timonier import clock

from .conftest import ApiClient

TRACK = {"customer_id": "u-1", "event": "purchase", "properties": {"amount": 29.99}}


@pytest.fixture
def redis_url(tmp_path, settings):
    """A redis-server of the test's own, as the API's Redis (its command counts are the test's alone)."""
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", str(port),
         "--dir", str(tmp_path), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        wait_for(answers, timeout=10, what=f"redis-server on port {port}")
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        yield settings.REDIS_URL
    finally:
        server.terminate()
        server.wait(timeout=10)


class RedisMonitor:
    """The commands clients send to the server while it watches (MONITOR), without those a script
    runs: each is one round trip of a client."""

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)
        self.commands: list[str] = []
        self.claims = 0
        self._monitor = self.client.monitor().__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            command = self._monitor.next_command()
            if command["command"] == "ECHO monitor-end":
                return
            if command["client_type"] != "lua" and not command["command"].startswith("HELLO"):  # handshakes
                if "cdp:wake:" in command["command"]:  # the publisher thread's claims (cdp/inbox.py), not a request's
                    self.claims += 1
                    continue
                self.commands.append(command["command"].split()[0].upper())

    def stop(self) -> list[str]:
        self.client.echo("monitor-end")
        self._thread.join(timeout=10)
        self._monitor.__exit__()
        self.client.close()
        return self.commands


def test_a_track_call_with_a_remembered_key_makes_one_redis_round_trip(api, redis_url):
    assert api.post("/v1/track", TRACK).status_code == 202  # the key is now remembered
    monitor = RedisMonitor(redis_url)

    assert api.post("/v1/track", TRACK).status_code == 202

    # The bucket's token and the key generation, in one script; no GET of the generation alone.
    assert monitor.stop() == ["EVALSHA"]


def test_a_track_call_with_a_remembered_key_makes_one_sql_statement(api, redis_url):
    assert api.post("/v1/track", TRACK).status_code == 202

    with CaptureQueriesContext(connection) as queries:
        assert api.post("/v1/track", TRACK).status_code == 202

    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"], queries.captured_queries


def test_a_revoked_key_is_refused_from_the_next_request_on(api, redis_url):
    assert api.post("/v1/track", TRACK).status_code == 202
    assert api.post("/v1/track", TRACK).status_code == 202  # answered from memory

    api_key_revoke(api_key=ApiKey.objects.get(project=api.project))

    response = api.post("/v1/track", TRACK)
    assert response.status_code == 401, response.content
    assert response.json()["message"] == "invalid or revoked API key"


def test_the_generation_read_with_the_rate_limit_decides_whether_memory_is_trusted(api, redis_url):
    assert api.post("/v1/track", TRACK).status_code == 202
    ApiKey.objects.filter(project=api.project).update(revoked_at=clock.now())  # unannounced
    assert api.post("/v1/track", TRACK).status_code == 202  # memory trusted: same generation

    generation_bump()  # what api_key_revoke, or any change in another process, announces

    assert api.post("/v1/track", TRACK).status_code == 401


def test_the_rate_limit_holds_with_a_remembered_key(api, redis_url):
    api.project.ingest_rate_limit = 1
    api.project.save()

    statuses = [api.post("/v1/track", TRACK).status_code for _ in range(4)]

    assert statuses == [202, 202, 429, 429]  # a burst of 2 s at 1 request per second


postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's locks and xmin")


def _psycopg_dsn() -> str:
    s = connection.settings_dict
    return f"host={s['HOST'] or '127.0.0.1'} port={s['PORT'] or 5432} dbname={s['NAME']} user={s['USER']}" + (
        f" password={s['PASSWORD']}" if s["PASSWORD"] else ""
    )


class Requests:
    """Threads that each enqueue one request's calls outside a transaction, as API threads do."""

    def __init__(self):
        self.threads: list[threading.Thread] = []
        self.results: dict[int, object] = {}

    def start(self, number: int, project_id: int) -> None:
        def run():
            now = clock.now()
            raw = {"customer_id": f"u-{number}", "event": "purchase"}
            try:
                message = normalize(raw, received_at=now, default_type="track")
                self.results[number] = inbox.commands_enqueue(
                    project_id=project_id, messages=[message], received_at=now
                )
            except Exception as exc:  # noqa: BLE001 (the test reads what each request got)
                self.results[number] = exc
            finally:
                connection.close()

        thread = threading.Thread(target=run, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads)


def _hold_inbox_lock():
    """Another session holding cdp_command locked: INSERTs wait until it commits."""
    locker = psycopg.connect(_psycopg_dsn())
    locker.execute(f"LOCK TABLE {Command._meta.db_table} IN ACCESS EXCLUSIVE MODE")
    return locker


def _waiting_on_lock(count: int) -> bool:
    with psycopg.connect(_psycopg_dsn(), autocommit=True) as watcher:
        waiting = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            [f"INSERT INTO {Command._meta.db_table}%"],
        ).fetchone()[0]
    return waiting == count


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_requests_arriving_during_a_commit_share_the_next_insert_and_wait_for_it():
    project = ProjectFactory()
    requests = Requests()
    locker = _hold_inbox_lock()
    try:
        requests.start(0, project.pk)  # leads: its INSERT waits for the lock
        wait_for(lambda: _waiting_on_lock(1), timeout=10, what="the first INSERT waiting on the lock")
        for number in range(1, 8):
            requests.start(number, project.pk)
        wait_for(lambda: len(inbox._Group._waiting) == 7, timeout=10, what="seven requests queued behind it")
        assert not requests.results  # none answered before its rows were committed
        assert _waiting_on_lock(1)  # and only one INSERT went to the database
    finally:
        locker.commit()
        locker.close()
    requests.join()

    assert all(not isinstance(r, Exception) for r in requests.results.values()), requests.results
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM cdp_command WHERE project_id = %s", [project.pk]
        )
        rows, transactions = cursor.fetchone()
    assert (rows, transactions) == (8, 2)  # the first alone, the seven others in one transaction


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_request_that_fails_in_a_group_fails_alone():
    project = ProjectFactory()
    requests = Requests()
    locker = _hold_inbox_lock()
    try:
        requests.start(0, project.pk)
        wait_for(lambda: _waiting_on_lock(1), timeout=10, what="the first INSERT waiting on the lock")
        for number in range(1, 4):
            requests.start(number, project.pk)
        requests.start(4, 2**62)  # no such project: its row breaks the foreign key
        for number in range(5, 8):
            requests.start(number, project.pk)
        wait_for(lambda: len(inbox._Group._waiting) == 7, timeout=10, what="seven requests queued behind it")
    finally:
        locker.commit()
        locker.close()
    requests.join()

    assert isinstance(requests.results.pop(4), IntegrityError)
    assert all(not isinstance(r, Exception) for r in requests.results.values()), requests.results
    assert Command.objects.filter(project=project).count() == 7


@pytest.mark.django_db(transaction=True)
def test_concurrent_track_calls_are_each_stored_once(settings):
    project = ProjectFactory()
    _, raw = api_key_create(project=project, name="test")
    api = ApiClient(project, raw)
    assert api.post("/v1/track", TRACK).status_code == 202
    statuses: list[int] = []

    def send(number: int):
        client = ApiClient(project, raw)
        statuses.append(client.post("/v1/track", {**TRACK, "message_id": f"m-{number}"}).status_code)
        connection.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert statuses == [202] * 16
    stored = [m["message_id"] for c in Command.objects.filter(project=project) for m in orjson.loads(c.payload)]
    assert sorted(m for m in stored if m.startswith("m-")) == sorted(f"m-{n}" for n in range(16))


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_inbox_insert_reconnects_once_when_its_connection_died():
    project = ProjectFactory()
    connection.ensure_connection()
    with psycopg.connect(_psycopg_dsn(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    now = clock.now()

    message = normalize(TRACK, received_at=now, default_type="track")

    inbox.commands_enqueue(project_id=project.pk, messages=[message], received_at=now)

    assert Command.objects.filter(project=project).count() == 1


def test_the_api_service_checks_no_database_connection_before_each_request(tmp_path):
    """A SELECT 1 per request cost as much as the ingest INSERT; the platform keeps Django's check."""
    script = "from django.conf import settings; print(settings.DATABASES['default']['CONN_HEALTH_CHECKS'])"
    found = {}
    for service in ("api", "platform"):
        env = {
            "PATH": "/usr/bin:/bin",
            "SECRET_KEY": "x",
            "TIMONIER_VAR_DIR": str(tmp_path),
            "DATABASE_URL": "postgres://timonier@127.0.0.1:5/timonier",
            "TIMONIER_SERVICE": service,
            "DJANGO_SETTINGS_MODULE": "timonier.settings",
        }
        found[service] = subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); {script}"],
            env=env, capture_output=True, text=True, check=True, cwd=settings_root(),
        ).stdout.strip()  # fmt: skip
    assert found == {"api": "False", "platform": "True"}


def settings_root() -> str:
    from django.conf import settings

    return str(settings.BASE_DIR)
