"""The real processes on the test database: the CDP API under gunicorn and a Celery worker.

A pytest plugin (`pytest_plugins = ["tests.live"]` in tests/conftest.py). Its fixtures:

- `live_db_env` (session): the environment of the processes. DATABASE_URL names the TEST database
  of this session (SQLite file or PostgreSQL), TIMONIER_VAR_DIR a folder of the session.
- `api_server` (session): `gunicorn timonier.wsgi` with TIMONIER_SERVICE=api on 127.0.0.1, as the
  Procfile runs it; `.url`, and `.requests()`, what its access log recorded.
- `celery_worker` (session): `celery -A timonier worker -Q celery,workflows`; `.wait_processed(project_id)`
  waits until the worker has applied every command of a project.

Tests that use them need committed data, so they run with
`@pytest.mark.django_db(transaction=True)`.

The broker is the processes' own, never the test process's: on the filesystem transport it lives
in the session's TIMONIER_VAR_DIR, on Redis in another database of the same server
(`LIVE_BROKER_REDIS_DB`). So the wake-ups that other tests publish from this process (every
`cdp.inbox.commands_enqueue` calls `wake()`) never reach the live worker, which would otherwise
process the commands of those tests behind their back; and `cache.clear()` in a test, a FLUSHDB of
the cache's Redis database, cannot wipe the live broker's queues and bindings.

The periodic sweep (`cdp.tasks.sweep_commands_task`, run by celery beat in production) is the
backstop for wake-ups that the API leaves out: it publishes at most one per project and process
every `cdp.inbox.WAKE_INTERVAL`, so a command committed just after the worker found the inbox empty
waits for the sweep. No beat runs here, since a sweep would process the pending commands of every
other test too: `wait_processed` does the sweep's work for its own project instead, publishing
`process_commands_task(project_id)` to the live broker once a second while commands are pending.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
API_START_TIMEOUT = 30  # seconds until GET /health answers
WORKER_START_TIMEOUT = 60  # seconds until the worker logs "ready"
STOP_TIMEOUT = 15  # seconds a process group gets to exit on SIGTERM before SIGKILL
SWEEP_INTERVAL = 1.0  # seconds between the wake-ups `wait_processed` publishes, as beat's sweep
LIVE_BROKER_REDIS_DB = 15  # the live processes' broker database on a Redis server (see above)
WORKER_READY = re.compile(r"@\S+ ready\.")
# How the worker dies when kombu's filesystem transport hands it a message file still empty.
KOMBU_FILESYSTEM_RACE = re.compile(r"Unrecoverable error: JSONDecodeError\('Expecting value: line 1 column 1 ")
MAX_WORKER_RESTARTS = 10  # per worker: bounded, and each one is a warning in the summary
# gunicorn's access log line, as `api_server` formats it.
ACCESS_LOG_FORMAT = (
    'access %(m)s %(U)s %(s)s origin="%({origin}i)s" content_type="%({content-type}i)s" '
    'content_encoding="%({content-encoding}i)s"'
)
ACCESS_LINE = re.compile(
    r'access (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) origin="(?P<origin>[^"]*)" '
    r'content_type="(?P<content_type>[^"]*)" content_encoding="(?P<content_encoding>[^"]*)"'
)

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 15, *, interval: float = 0.05, what: str = "") -> T:
    """Poll `predicate` until it returns a truthy value, and return that value.

    An AssertionError raised by the predicate counts as "not yet" (so a predicate may assert, and
    the last failed assertion is shown); other exceptions propagate. Fails after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    last_error: AssertionError | None = None
    while True:
        try:
            value = predicate()
        except AssertionError as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            detail = f"\nlast assertion: {last_error}" if last_error is not None else f"\nlast value: {value!r}"
            raise AssertionError(f"timed out after {timeout} s waiting for {name}{detail}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Environment --------------------------------------------------------------------------------


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL that django-environ turns back into these connection settings."""
    engine = settings_dict["ENGINE"]
    name = str(settings_dict["NAME"])
    if engine == "django.db.backends.sqlite3":
        if name == ":memory:" or name.startswith("file:"):
            raise pytest.UsageError("the live processes need a SQLite test database in a file")
        return f"sqlite:///{Path(name).resolve()}"  # an absolute path: sqlite:////tmp/...
    if engine in ("django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis"):
        user = quote(str(settings_dict.get("USER") or ""), safe="")
        password = quote(str(settings_dict.get("PASSWORD") or ""), safe="")
        host = str(settings_dict.get("HOST") or "")
        port = str(settings_dict.get("PORT") or "")
        options = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if isinstance(v, (str, int))}
        if host.startswith("/"):  # a socket folder: libpq's `host` option, which Django passes on
            options["host"], host = host, ""
        credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        netloc = credentials + quote(host, safe="") + (f":{port}" if port else "")
        query = f"?{urlencode(options)}" if options else ""
        return f"postgres://{netloc}/{quote(name, safe='')}{query}"
    raise pytest.UsageError(f"the live processes do not support the database engine {engine}")


def live_broker_url(broker_url: str) -> str:
    """The live processes' broker: the filesystem one of their own TIMONIER_VAR_DIR, or another
    database of the same Redis server; any other broker as it is."""
    parts = urlsplit(broker_url)
    if parts.scheme not in ("redis", "rediss"):
        return broker_url
    db = parts.path.strip("/")
    current = int(db) if db.isdigit() else 0
    live = LIVE_BROKER_REDIS_DB if current != LIVE_BROKER_REDIS_DB else LIVE_BROKER_REDIS_DB - 1
    return urlunsplit(parts._replace(path=f"/{live}"))


@pytest.fixture(scope="session")
def live_db_env(django_db_setup, django_db_blocker, tmp_path_factory) -> dict[str, str]:
    """The environment of the live processes: this one, pointed at the test database."""
    from django.conf import settings
    from django.db import connections

    with django_db_blocker.unblock():
        connection = connections["default"]
        tables = connection.introspection.table_names()
        settings_dict = dict(connection.settings_dict)
    if "cdp_command" not in tables:
        raise pytest.UsageError(f"the test database {settings_dict['NAME']} has no cdp_command table")

    var_dir = tmp_path_factory.mktemp("live-var")
    dropped = {"TIMONIER_SERVICE", "DJANGO_ALLOW_ASYNC_UNSAFE"}  # set per process / for Playwright's tests
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("PYTEST_")}
    env.update(
        DJANGO_SETTINGS_MODULE="timonier.settings",
        DATABASE_URL=database_url(settings_dict),
        SECRET_KEY=settings.SECRET_KEY,
        TIMONIER_VAR_DIR=str(var_dir),
        # Explicit, so that a developer's .env cannot fill them differently.
        REDIS_URL=settings.REDIS_URL,
        CELERY_BROKER_URL=live_broker_url(settings.CELERY_BROKER_URL),
        CELERY_TASK_ALWAYS_EAGER="false",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


# --- Processes ----------------------------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    """Whether a process group still has a member that is not a zombie (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class LiveProcess:
    """A command in its own process group, its output in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log_path = log_path
        self.start()

    def start(self) -> None:
        self.log_path.touch()
        self.log_start = self.log_path.stat().st_size  # a restart appends to the same log
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # gunicorn and celery fork: stop the whole group
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_since_start(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def log_tail(self, chars: int = 6000) -> str:
        return f"----- {self.name} log ({self.log_path}) -----\n{self.log()[-chars:]}"

    def assert_running(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"{self.name} exited with code {code}\n{self.log_tail()}")

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.assert_running()
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name}: {what} within {timeout} s\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the process group, wait for all of it, SIGKILL what is left."""
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the leader; its group lives on while a member does
            if not _group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


@dataclass(frozen=True)
class AccessLogEntry:
    method: str
    path: str
    status: int
    origin: str
    content_type: str
    content_encoding: str


class ApiServer(LiveProcess):
    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "timonier.wsgi",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "2",
            "--threads",
            "2",
            "--graceful-timeout",
            "5",
            "--access-logfile",
            "-",
            "--access-logformat",
            ACCESS_LOG_FORMAT,
        ]
        super().__init__("api", cmd, {**env, "TIMONIER_SERVICE": "api"}, log_path)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def log_mark(self) -> int:
        """A position in the log: `requests(since=mark)` reads only what came after it."""
        return self.log_path.stat().st_size

    def requests(self, since: int = 0) -> list[AccessLogEntry]:
        """The requests the API answered (its access log), oldest first."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        entries = []
        for match in ACCESS_LINE.finditer(text):
            fields = match.groupdict()
            fields["status"] = int(fields["status"])
            for name in ("origin", "content_type", "content_encoding"):
                fields[name] = "" if fields[name] == "-" else fields[name]  # gunicorn's "absent"
            entries.append(AccessLogEntry(**fields))
        return entries


@pytest.fixture(scope="session")
def api_server(live_db_env) -> Iterator[ApiServer]:
    """The CDP API as the Procfile runs it, on a free port of 127.0.0.1."""
    server = ApiServer(live_db_env, Path(live_db_env["TIMONIER_VAR_DIR"]) / "api.log")
    try:
        server.wait_until(server.healthy, API_START_TIMEOUT, "GET /health did not answer 200")
        yield server
    finally:
        server.stop()


class CeleryWorker(LiveProcess):
    def __init__(self, env: dict[str, str], log_path: Path):
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "timonier",
            "worker",
            "-l",
            "info",
            "--concurrency",
            "1",
            "-Q",
            "celery,workflows",
            "-n",
            f"live-{os.getpid()}@%h",
            # No cluster chatter to wait for at start: this is the only worker on its broker.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        super().__init__("worker", cmd, env, log_path)
        self.broker_url = env["CELERY_BROKER_URL"]
        self.var_dir = Path(env["TIMONIER_VAR_DIR"])
        self.wakes_published = 0
        self.restarts = 0
        self._publisher = None

    def ready(self) -> bool:
        return bool(WORKER_READY.search(self.log_since_start()))

    def assert_running(self) -> None:
        """Fail if the worker died, unless of kombu's filesystem race: then restart it, and warn."""
        if self.proc.poll() is None:
            return
        if not KOMBU_FILESYSTEM_RACE.search(self.log_since_start()) or self.restarts >= MAX_WORKER_RESTARTS:
            super().assert_running()
        # kombu's filesystem transport writes a message file in place, so a worker polling the
        # folder can read it empty and die of the JSONDecodeError (celery/kombu#1551; reported to
        # the app: the embedded broker needs an atomic publish). Waking it again below redelivers
        # what the lost message asked for; the warning keeps the crash visible in the summary.
        self.restarts += 1
        warnings.warn(
            f"the live Celery worker died of kombu's filesystem-broker race (celery/kombu#1551) and was "
            f"restarted ({self.restarts}/{MAX_WORKER_RESTARTS}); see {self.log_path}",
            stacklevel=2,
        )
        self.stop()
        self.start()
        self.wait_until(self.ready, WORKER_START_TIMEOUT, 'did not log "ready" after a restart')

    def publisher(self):
        """A Celery app of this process publishing to the worker's broker (not this process's)."""
        if self._publisher is None:
            from celery import Celery
            from django.test import override_settings

            from timonier import celery as timonier_celery

            # The transport options exactly as the worker computes them from its settings.
            with override_settings(CELERY_BROKER_URL=self.broker_url, CELERY_BROKER_DIR=self.var_dir / "broker"):
                options = timonier_celery._broker_transport_options()
            app = Celery("timonier-live-publisher", set_as_current=False)
            app.conf.update(
                broker_url=self.broker_url,
                broker_transport_options=options,
                broker_connection_timeout=5,
                task_serializer="json",
                accept_content=["json"],
            )
            self._publisher = app
        return self._publisher

    def wake(self, project_id: int) -> None:
        """Publish `process_commands_task(project_id)`, as the API and the sweep do."""
        # An explicit connection: Celery prefers the CELERY_BROKER_URL environment variable (this
        # test process's own broker) over the app's configured broker_url.
        app = self.publisher()
        with app.connection_for_write(self.broker_url) as connection:
            app.send_task(
                "cdp.tasks.process_commands_task",
                args=[project_id],
                queue="celery",
                retry=False,
                connection=connection,
            )
        self.wakes_published += 1

    def wait_processed(self, project_id: int, timeout: float = 15) -> None:
        """Wait until no command of the project is pending, waking the worker once a second meanwhile.

        Call it once the API has answered every request of the test: its commands are committed.
        """
        from cdp.models import Command

        deadline = time.monotonic() + timeout
        next_wake = time.monotonic() + SWEEP_INTERVAL
        while True:
            pending = Command.objects.filter(project_id=project_id).count()
            if not pending:
                return
            self.assert_running()
            now = time.monotonic()
            if now >= deadline:
                raise AssertionError(
                    f"{pending} command(s) of project {project_id} still pending after {timeout} s\n{self.log_tail()}"
                )
            if now >= next_wake:
                self.wake(project_id)
                next_wake = now + SWEEP_INTERVAL
            time.sleep(0.05)

    def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        super().stop()


@pytest.fixture(scope="session")
def celery_worker(live_db_env) -> Iterator[CeleryWorker]:
    """A Celery worker of the default queue, as the Procfile runs it (one process)."""
    worker = CeleryWorker(live_db_env, Path(live_db_env["TIMONIER_VAR_DIR"]) / "worker.log")
    try:
        worker.wait_until(worker.ready, WORKER_START_TIMEOUT, 'did not log "ready"')
        yield worker
    finally:
        worker.stop()
