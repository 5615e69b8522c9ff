"""The embedded setup of `make run`, for real: the four Procfile processes on SQLite and the
filesystem broker, with no server but themselves.

The commands are read from the Procfile and run as honcho runs them (`/bin/sh -c`), with the
ports moved off 3010/3030 through PLATFORM_PORT/API_PORT. The test process itself may be
configured for PostgreSQL and Redis (`make test`): the processes' environment overrides that.
"""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent  # where gunicorn and celery are installed
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")  # honcho's own pattern
PROCESSES = {"platform", "api", "worker", "scheduler"}
START_TIMEOUT = 60
TASK_TIMEOUT = 60


def parse_procfile() -> dict[str, str]:
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        match = PROCFILE_LINE.match(line)
        if match:
            processes[match.group(1)] = match.group(2)
    return processes


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        ports = [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
    assert not {3010, 3030} & set(ports)
    return ports


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with _opener.open(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def group_members(pgid: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of the live (not zombie) processes of a process group (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((int(stat.parent.name), int(fields[1])))
    return members


class Embedded:
    def __init__(self, var: Path) -> None:
        self.var = var
        self.db = var / "timonier.sqlite3"
        self.platform_port, self.api_port = free_ports(2)
        self.platform = f"http://127.0.0.1:{self.platform_port}"
        self.api = f"http://127.0.0.1:{self.api_port}"
        env = {k: v for k, v in os.environ.items() if k != "TIMONIER_SERVICE" and not k.startswith("PYTEST_")}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            DJANGO_SETTINGS_MODULE="timonier.settings",
            SECRET_KEY=os.environ.get("SECRET_KEY") or "embedded-run-test-secret-key",
            TIMONIER_VAR_DIR=str(var),
            DATABASE_URL=f"sqlite:///{self.db}",  # absolute path: sqlite:////tmp/...
            REDIS_URL="",
            CELERY_BROKER_URL="filesystem://",
            CELERY_TASK_ALWAYS_EAGER="false",
            EMAIL_URL="consolemail://",
            DEBUG="false",
            PLATFORM_PORT=str(self.platform_port),
            API_PORT=str(self.api_port),
            PLATFORM_URL=self.platform,
            API_URL=self.api,
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.processes: dict[str, subprocess.Popen] = {}
        self.table = ""

    def log(self, name: str) -> str:
        path = self.var / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"----- {name} -----\n{self.log(name)[-4000:]}" for name in self.processes)

    def manage(self, *args: str, timeout: float = 180) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, procfile: dict[str, str]) -> None:
        for name, command in procfile.items():
            with open(self.var / f"{name}.log", "wb") as log:
                self.processes[name] = subprocess.Popen(
                    command,
                    shell=True,
                    executable="/bin/sh",
                    cwd=ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: gunicorn and celery fork
                )

    def assert_running(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        assert not dead, f"processes exited: {dead}\n{self.logs()}"

    def wait_until(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            self.assert_running()
            try:
                result = condition()
            except OSError:
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")
            time.sleep(0.25)

    def stop(self) -> None:
        """Stop each process as honcho's Ctrl-C would, but orderly; SIGKILL whatever is left.

        SIGTERM goes to the program the shell started (gunicorn's master, celery's main process),
        which stops its own workers: signalling the whole group at once can leave celery's main
        process waiting for pool processes that are already gone.
        """
        groups = [p.pid for p in self.processes.values()]
        for pgid in groups:
            programs = [pid for pid, ppid in group_members(pgid) if ppid == pgid] or [pgid]
            for pid in programs:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 30
        while any(group_members(pgid) for pgid in groups) and time.monotonic() < deadline:
            for process in self.processes.values():
                process.poll()  # reap the shells
            time.sleep(0.1)
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for process in self.processes.values():
            process.wait()

    def count(self, table: str, where: str) -> int:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]

    def verification_rows(self, row_id: str) -> int:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(f"SELECT count(*) FROM {self.table} WHERE id = ?", (row_id,)).fetchone()[0]


@pytest.fixture(scope="module")
def procfile() -> dict[str, str]:
    return parse_procfile()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, procfile):
    run = Embedded(tmp_path_factory.mktemp("embedded-var"))
    run.manage("migrate", "--noinput")
    run.manage("collectstatic", "--noinput")
    try:
        run.start(procfile)
        run.wait_until(lambda: http_get(f"{run.platform}/login")[0] == 200, START_TIMEOUT, "the platform")
        run.wait_until(lambda: http_get(f"{run.api}/health")[0] == 200, START_TIMEOUT, "the API")
        yield run
    finally:
        run.stop()


def test_the_procfile_runs_the_four_processes(procfile):
    assert set(procfile) == PROCESSES
    assert "TIMONIER_SERVICE=platform" in procfile["platform"] and "${PLATFORM_PORT:-3010}" in procfile["platform"]
    assert "TIMONIER_SERVICE=api" in procfile["api"] and "${API_PORT:-3030}" in procfile["api"]


def test_the_platform_serves_the_ui_and_not_the_api(embedded):
    status, _ = http_get(f"{embedded.platform}/login")
    assert status == 200
    assert http_get(f"{embedded.platform}/health")[0] == 404
    # gunicorn writes its access log to stdout.
    embedded.wait_until(lambda: "GET /login" in embedded.log("platform"), 10, "the access log")


def test_the_api_serves_health_and_not_the_ui(embedded):
    status, body = http_get(f"{embedded.api}/health")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    assert http_get(f"{embedded.api}/login")[0] == 404


def test_the_scheduler_sweeps_the_inbox_without_any_wake_up(embedded):
    # Its schedule file is in TIMONIER_VAR_DIR (shelve may add a suffix).
    embedded.wait_until(lambda: list(embedded.var.glob("celerybeat-schedule*")), START_TIMEOUT, "the schedule file")
    # A command stored straight into the inbox, with no wake-up message: only the scheduler's
    # periodic sweep, run by the worker, can get it processed.
    embedded.manage(
        "shell",
        "-c",
        "from cdp.models import Command\n"
        "from cdp.storage import dumps\n"
        "from organizations.models import Organization, Project\n"
        "from timonier import clock\n"
        "org = Organization.objects.create(name='Embedded', slug='embedded')\n"
        "project = Project.objects.create(organization=org, name='Run', slug='run')\n"
        "message = {'type': 'track', 'customer_id': 'u', 'anonymous_id': None, 'event': 'swept', 'traits': None,\n"
        "           'properties': {}, 'context': {}, 'timestamp': clock.now().isoformat(), 'message_id': 'swept-1',\n"
        "           'previous': None, 'group_id': None}\n"
        "Command.objects.create(project=project, payload=dumps([message]), message_count=1)\n",
    )
    embedded.wait_until(lambda: embedded.count("cdp_event", "message_id = 'swept-1'") == 1, TASK_TIMEOUT, "the sweep")
    assert embedded.count("cdp_command", "1 = 1") == 0


def test_the_worker_runs_a_task_sent_through_the_filesystem_broker(embedded):
    created = embedded.manage(
        "shell",
        "-c",
        "import json\n"
        "from datetime import timedelta\n"
        "from accounts.models import EmailVerification, User\n"
        "from timonier import clock\n"
        "user = User.objects.create(email='embedded-run@example.com', first_name='E', last_name='R')\n"
        "row = EmailVerification.objects.create(user=user, created_at=clock.now() - timedelta(days=2))\n"
        "print(json.dumps({'id': row.pk.hex, 'table': EmailVerification._meta.db_table}))\n",
    )
    row = json.loads(created.strip().splitlines()[-1])
    embedded.table = row["table"]
    assert embedded.verification_rows(row["id"]) == 1

    embedded.manage(
        "shell",
        "-c",
        "from accounts.tasks import purge_expired_verifications_task as task\ntask.delay()\n",
    )
    # Beat sends this task once an hour only: the row goes because the worker ran the one sent here.
    embedded.wait_until(lambda: embedded.verification_rows(row["id"]) == 0, TASK_TIMEOUT, "the worker")


def test_signing_up_on_the_platform_gets_the_verification_email_from_the_worker(embedded):
    """The guide's first step on `make run`'s own processes: the Sign Up form only stores the
    request (accounts.SignupRequest); the worker answers it and the email, on the console backend,
    is printed by the worker."""
    jar = urllib.request.HTTPCookieProcessor()
    browser = urllib.request.build_opener(urllib.request.ProxyHandler({}), jar)
    with browser.open(f"{embedded.platform}/signup", timeout=5) as response:
        page = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    fields = {"email": "guide-signup@example.com", "first_name": "Ada", "last_name": "Lovelace"}
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
    request = urllib.request.Request(f"{embedded.platform}/signup", data=form, headers={"Referer": embedded.platform})
    with browser.open(request, timeout=10) as response:
        assert response.status == 200 and response.url.endswith("/signup/sent")
    embedded.wait_until(
        lambda: "To: guide-signup@example.com" in embedded.log("worker") and "/verify/" in embedded.log("worker"),
        TASK_TIMEOUT,
        "the verification email printed by the worker",
    )
    assert embedded.count("accounts_signuprequest", "1 = 1") == 0
