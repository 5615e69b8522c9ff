"""What both benchmarks share: their settings, SQL on the bench database, the live API and worker."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from table import tree

ROOT = Path(__file__).resolve().parent.parent

SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
# BENCH_PROFILE=1: py-spy records the API and the worker of every part while it runs; bench/run.py
# (or bench/profiles.py) summarises the samples in bench/results/profiles/<part>-<process>.txt.
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
PROFILES = ROOT / "bench" / "results" / "profiles"
API_WORKERS = int(os.environ.get("BENCH_API_WORKERS", "4"))
API_THREADS = int(os.environ.get("BENCH_API_THREADS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
DRAIN_TIMEOUT = 300

# wrk's script of `/v1/batch` calls of 100 purchases for customers PREFIX0 … PREFIX<SPACE - 1>,
# each purchase numbered: the load of the ingest, store and workflows parts.
PURCHASES_LUA = """
local n = 0
request = function()
  local items = {}
  for i = 1, 100 do
    n = n + 1
    items[i] = '{"type":"track","userId":"PREFIX' .. (n % SPACE) .. '","event":"purchase","properties":{"item":"T-Shirt","amount":29.99,"currency":"USD","n":' .. n .. '}}'
  end
  local body = '{"batch":[' .. table.concat(items, ",") .. ']}'
  return wrk.format("POST", "/v1/batch", {["Content-Type"]="application/json", ["Authorization"]="Bearer KEY"}, body)
end
"""


def purchases_lua(key: str, *, prefix: str = "bench-", space: int = 10_000) -> str:
    return PURCHASES_LUA.replace("KEY", key).replace("PREFIX", prefix).replace("SPACE", str(space))


class SharedPostgres:
    """A database of make bench's one PostgreSQL server, copied from its migrated template when the
    part starts and dropped when it stops: the parts share a server instead of each starting and
    migrating its own (~15 s each). Same interface as testenv.Postgres."""

    def __init__(self, server_url: str, name: str) -> None:
        self.base, self.template = server_url.rsplit("/", 1)
        self.name = f"bench_{name}"

    def start(self) -> None:
        admin = self.base + "/postgres"
        sql(admin, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        sql(admin, f"CREATE DATABASE {self.name} TEMPLATE {self.template}")

    def stop(self) -> None:
        sql(self.base + "/postgres", f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")

    @property
    def url(self) -> str:
        return f"{self.base}/{self.name}"


class SharedRedis:
    """make bench's one Redis, emptied when a part starts (the parts run one after the other)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        pass


def postgres_server(folder: Path, port: int):
    """The part's PostgreSQL (durable): make bench's shared server (BENCH_POSTGRES, set by
    bench/run.py) or, for a part run alone, its own throwaway server in `folder`."""
    if os.environ.get("BENCH_POSTGRES"):
        return SharedPostgres(os.environ["BENCH_POSTGRES"], Path(sys.argv[0]).stem)
    from testenv import Postgres

    return Postgres(folder, port, durable=True)


def redis_server(folder: Path, port: int):
    """The part's Redis: make bench's shared one (BENCH_REDIS) or its own throwaway server."""
    if os.environ.get("BENCH_REDIS"):
        return SharedRedis(os.environ["BENCH_REDIS"])
    from testenv import Redis

    return Redis(folder, port)


_STARTED = time.monotonic()


def log(message: str) -> None:
    """A progress line on stderr, with the seconds since this process started (where a part's time goes)."""
    print(f"bench: [{time.monotonic() - _STARTED:5.1f} s] {message}", file=sys.stderr, flush=True)


def sql(database_url: str, query: str, params=None):
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def bench_env(folder: Path, database_url: str, redis_url: str) -> dict:
    """The environment of the bench's processes: its throwaway servers, no rate limit, quiet logs."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "bench-only",
        "TIMONIER_VAR_DIR": str(folder / "var"),
        "API_RATE_LIMIT": "1000000",
        "LOG_LEVEL": "WARNING",
    }


def wait_drained(database_url: str) -> float:
    """Poll until the inbox is empty; return the moment it was found empty."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        if sql(database_url, "SELECT count(*) FROM cdp_command")[0][0] == 0:
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit("bench: the inbox did not drain within the timeout")


def start_platform(env: dict, api_port: int, processes: list, *, concurrency: int = 1) -> tuple[str, str]:
    """An API key, the API under gunicorn and one Celery worker (of `concurrency` processes), as in
    production; (url, key). The processes are appended to `processes` for the caller to stop."""
    python = sys.executable
    key = subprocess.run(
        [python, "manage.py", "create_api_key", "--org", "bench", "--project", "bench", "--name", "bench"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    bin_dir = Path(python).parent
    processes.append(
        subprocess.Popen(
            [str(bin_dir / "gunicorn"), "timonier.wsgi", "--bind", f"127.0.0.1:{api_port}",
             "--workers", str(API_WORKERS), "--threads", str(API_THREADS), "--log-level", "warning"],
            cwd=ROOT, env={**env, "TIMONIER_SERVICE": "api"},
        )
    )  # fmt: skip
    processes.append(
        subprocess.Popen(
            [str(bin_dir / "celery"), "-A", "timonier", "worker", "-l", "warning", "--concurrency", str(concurrency)],
            cwd=ROOT, env=env,
        )
    )  # fmt: skip
    url = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()  # noqa: S310 (loopback)
            profile(processes[-2].pid, "api")  # from here on: the start-up's imports are not what is measured
            profile(processes[-1].pid, "worker")
            return url, key
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the API did not start") from None
            time.sleep(0.2)


def profile(pid: int, name: str) -> None:
    """With BENCH_PROFILE=1, sample `pid` and its child processes with py-spy (not pausing them: the
    sampler's cost stays off the measured processes' threads) until they exit, as raw stacks in
    bench/results/profiles/<part>-<name>.<pid>.raw; bench/profiles.py summarises them."""
    if not PROFILE:
        return
    PROFILES.mkdir(parents=True, exist_ok=True)
    raw = PROFILES / f"{Path(sys.argv[0]).stem}-{name}.{pid}.raw"
    subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--subprocesses", "--function",
         "--nonblocking", "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def start_beat(env: dict, folder: Path, processes: list) -> None:
    """The scheduler, as the Procfile starts it: the periodic sweeps (and how workflow delays fall due)."""
    bin_dir = Path(sys.executable).parent
    processes.append(
        subprocess.Popen(
            [str(bin_dir / "celery"), "-A", "timonier", "beat", "-l", "warning",
             "--schedule", str(folder / "celerybeat-schedule")],
            cwd=ROOT, env=env,
        )
    )  # fmt: skip


def stop_processes(processes: list, *, kill: bool = False) -> None:
    """Terminate what the bench started (SIGTERM, then SIGKILL after 20 s; kill: SIGKILL at once,
    when what they are still doing is not measured), emptying the list."""
    started = time.monotonic()
    if processes:
        log(f"stopping {len(processes)} process(es)")
    for process in processes:
        if kill:
            for pid in reversed(tree(process.pid)):  # its pool processes too, not left orphaned
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        else:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if processes:
        log(f"stopped in {time.monotonic() - started:.1f} s")
    processes.clear()
