"""Bench part "ingest": the API's request rows, then bench/store.py's stored rows on the same platform.

    QUICK=1 .venv/bin/python bench/ingest.py      (or make bench BENCH_ONLY=ingest [QUICK=1])

Starts a throwaway PostgreSQL 15 (durable: fsync and synchronous_commit on) and Redis, the live
platform as in production (the API under gunicorn, one Celery worker), and the bare endpoint
(bench/bare.py: the same gunicorn and settings answering 202 to a parsed body, no other work),
then measures, each against its limit in the same run:

1. `/v1/track requests/s`: wrk (its own process) of single track calls on the live API / on the bare
   endpoint, the median of WRK_ROUNDS runs on each, alternating (the machine's load moves);
2. `/v1/track p99 at half the saturating rate`: bench/loadgen.py (open loop, latency from the
   scheduled send) at half row 1's live rate, on the live API then on the bare endpoint at the
   same rate; met when the live p99 is under 50 ms;
3. `/v1/batch (100) events/s accepted`: wrk of batches of 100 track calls on each, as row 1;

the platform's Celery worker paused for rows 1-3 (SIGSTOP: in production workers run on other
machines; on one machine a worker draining alongside takes a core that the bare endpoint keeps),
its commands dropped after (bench load, counted as accepted); printed beside row 1, one track run with the worker draining alongside;
and appends bench/store.py's `store_rows(...)` (events/s stored end to end, the worker curve)
when it exists. Every row carries the load generator's CPU share. Each wrk run lasts 5 s
(QUICK=1: 2 s, one run each), after one unmeasured second on each server; each rate run BENCH_SECONDS (15;
QUICK=1: 2 s).
"""

import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(BENCH))

import live  # noqa: E402
import table  # noqa: E402
from bare import start_bare  # noqa: E402
from live import CONNECTIONS, bench_env, log, purchases_lua, sql, start_platform, stop_processes, wait_drained  # noqa: E402
from testenv import ensure_packages, free_ports  # noqa: E402

WRK_SECONDS = 2 if table.QUICK else 5
WRK_ROUNDS = 1 if table.QUICK else 3
RATE_SECONDS = 2 if table.QUICK else int(os.environ.get("BENCH_SECONDS", "15"))
WARM_UP_SECONDS = 1
P99_BOUND_MS = 50.0
LOADGEN_CONNECTIONS = 64

TRACK_LUA = """
local n = 0
request = function()
  n = n + 1
  local body = '{"customer_id":"bench-' .. (n % 10000) .. '","event":"purchase","properties":{"item":"T-Shirt","amount":29.99,"currency":"USD","n":' .. n .. '}}'
  return wrk.format("POST", "/v1/track", {["Content-Type"]="application/json", ["Authorization"]="Bearer KEY"}, body)
end
"""


def server_pid(url: str) -> int | None:
    """The gunicorn master serving `url` (found by its --bind in /proc): its tree's CPU per request
    is the request rows' figure that a machine shared with other work moves least."""
    bind = f"--bind\0{urlsplit(url).netloc}\0".encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and bind in (proc / "cmdline").read_bytes():
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if bind not in Path(f"/proc/{parent}/cmdline").read_bytes():
                    return int(proc.name)
        except OSError:
            continue
    return None


def wrk(url: str, script: str, key: str, folder: Path, *, seconds: int = WRK_SECONDS) -> dict:
    """A closed-loop wrk run: 2xx answers per second, latency percentiles, wrk's CPU share, and the
    server's CPU (its gunicorn processes) per answered request."""
    path = folder / "load.lua"
    path.write_text(script.replace("KEY", key))
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(path), url]
    pid = server_pid(url)
    server_before = table.tree_cpu(pid) if pid else 0.0
    cpu = table.Cpu()
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    load_cpu, machine_busy = cpu.shares()
    server_cpu = table.tree_cpu(pid) - server_before if pid else float("nan")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", output).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return {
        "rps": rps * (requests - errors) / requests if requests else 0.0,  # answered 2xx only
        "server_cpu_ms": 1000 * server_cpu / (requests - errors) if requests > errors else float("nan"),
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", output).group(1)),
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", output).group(1)),
        "errors": errors,
        "requests": requests,
        "load_cpu": load_cpu,
        "machine_busy": machine_busy,
    }


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def paired(live: str, bare: str, script: str, key: str, folder: Path) -> tuple[dict, dict]:
    """WRK_ROUNDS wrk runs on each server, alternating (live, bare, live, …), each server's median
    run: the machine is shared, and its load moves within seconds; alternating lets both servers
    meet the same."""
    runs: dict[str, list[dict]] = {"live": [], "bare": []}
    for _ in range(WRK_ROUNDS):
        runs["live"].append(wrk(live, script, key, folder))
        runs["bare"].append(wrk(bare, script, key, folder))
    medians = {}
    for name, found in runs.items():
        median = sorted(found, key=lambda run: run["rps"])[len(found) // 2]
        medians[name] = {**median, "rounds": [run["rps"] for run in found]}
    return medians["live"], medians["bare"]


def loadgen(url: str, key: str, rate: float) -> dict:
    """bench/loadgen.py at `rate` requests/s, as a waited-for child (its CPU share from table.Cpu)."""
    command = [sys.executable, str(BENCH / "loadgen.py"), "--url", url, "--key", key, "--rate", f"{rate:.1f}",
               "--seconds", str(RATE_SECONDS), "--connections", str(LOADGEN_CONNECTIONS)]  # fmt: skip
    cpu = table.Cpu()
    done = subprocess.run(command, capture_output=True, text=True, timeout=RATE_SECONDS + 60)
    if done.returncode:
        raise SystemExit(f"bench: the load generator failed:\n{done.stderr}")
    result = json.loads(done.stdout)
    result["load_cpu"], result["machine_busy"] = cpu.shares()
    return result


def _server_cpu(live: dict, bare: dict) -> str:
    return f"server CPU per request live {live['server_cpu_ms']:.2f} ms, bare {bare['server_cpu_ms']:.2f} ms"


def _rounds(run: dict) -> str:
    return " / ".join(f"{rps:,.0f}" for rps in run["rounds"])


def store_rows(**platform) -> list[dict]:
    """bench/store.py's rows on the running platform, once its engineer has written it."""
    try:
        store = importlib.import_module("store")
    except ModuleNotFoundError:
        store = None
    if not hasattr(store, "store_rows"):
        log("bench/store.py has no store_rows yet: the stored rows are skipped")
        return []
    return store.store_rows(**platform)


@contextlib.contextmanager
def worker_paused(pid: int):
    """The platform's Celery worker (its whole process tree) stopped (SIGSTOP) for the request rows,
    continued after. In production the workers run on other machines than the API; on this one,
    a worker draining during a live run took a core from the API that the bare endpoint, with no
    inbox to drain, kept (seen as live rates moving with the worker's CPU). The commands wait in
    the inbox meanwhile (durable); the caller drops them (bench load) before it continues."""
    pids = table.tree(pid)
    for each in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGSTOP)
    try:
        yield
    finally:
        for each in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGCONT)


def request_rows(
    live: str, bare: str, key: str, database_url: str, folder: Path, worker_pid: int
) -> tuple[list[dict], dict]:
    details: dict = {"wrk_seconds": WRK_SECONDS, "rate_seconds": RATE_SECONDS, "connections": CONNECTIONS}

    # A fresh server opens its database connections, spawns its threads and looks the key up
    # during its first requests: one unmeasured second of load each, so both rows read steady state.
    log(f"warm-up: wrk {WARM_UP_SECONDS} s on each server")
    wrk(live + "/v1/track", TRACK_LUA, key, folder, seconds=WARM_UP_SECONDS)
    wrk(bare + "/v1/track", TRACK_LUA, key, folder, seconds=WARM_UP_SECONDS)
    wait_drained(database_url)
    with worker_paused(worker_pid):
        rows = _paused_rows(live, bare, key, folder, details)
        # The calls the paused rows left (bench load only, measured as accepted) are dropped rather
        # than drained: draining ~10 s of them measures nothing (the stored rows come next).
        sql(database_url, "DELETE FROM cdp_command")
    # Printed beside: the same track load with the worker draining its calls on the same two cores.
    log(f"/v1/track: wrk {WRK_SECONDS} s on the live API with the worker draining alongside")
    alongside = wrk(live + "/v1/track", TRACK_LUA, key, folder)
    wait_drained(database_url)
    track_bare = details["track"]["bare"]
    rows.insert(1, table.row(
        "  /v1/track requests/s, the worker draining alongside", "req/s", alongside["rps"], track_bare["rps"],
        target=None, load_cpu=alongside["load_cpu"],
        note=f"one wrk run, {CONNECTIONS} connections, the worker running on the same cores (limit: the bare "
        f"median above); live p99 {alongside['p99']:.1f} ms; {_server_cpu(alongside, track_bare)}",
    ))  # fmt: skip
    return rows, details


def _paused_rows(live: str, bare: str, key: str, folder: Path, details: dict) -> list[dict]:
    """The three request rows, the worker paused (see worker_paused)."""
    log(f"/v1/track: wrk {WRK_ROUNDS} x {WRK_SECONDS} s on each, {CONNECTIONS} connections, alternating, "
        "the worker paused")  # fmt: skip
    track, track_bare = paired(live + "/v1/track", bare + "/v1/track", TRACK_LUA, key, folder)
    details["track"] = {"live": track, "bare": track_bare}
    rows = [
        table.row(
            "/v1/track requests/s", "req/s", track["rps"], track_bare["rps"], target=0.5,
            load_cpu=max(track["load_cpu"], track_bare["load_cpu"]),
            note=f"median of {WRK_ROUNDS} alternating wrk runs, {CONNECTIONS} connections, the worker paused: live p50 "
            f"{track['p50']:.1f} ms p99 {track['p99']:.1f} ms, non-2xx {track['errors']}; bare p99 "
            f"{track_bare['p99']:.1f} ms; runs live {_rounds(track)}, bare {_rounds(track_bare)}; "
            f"{_server_cpu(track, track_bare)}",
        )
    ]  # fmt: skip

    rate = max(1.0, track["rps"] / 2)
    log(f"/v1/track at {rate:,.0f} req/s (half the live rate), open loop {RATE_SECONDS} s: live then bare")
    paced = loadgen(live + "/v1/track", key, rate)
    paced_bare = loadgen(bare + "/v1/track", key, rate)
    details["track_paced"] = {"live": paced, "bare": paced_bare}
    p99 = paced["p99"] if paced["p99"] is not None else float("inf")
    rows.append(
        table.row(
            "/v1/track p99 at half the saturating rate", "ms", p99, paced_bare["p99"], target=None,
            lower_is_better=True, met=p99 < P99_BOUND_MS, target_text=f"p99 < {P99_BOUND_MS:g} ms",
            load_cpu=max(paced["load_cpu"], paced_bare["load_cpu"]),
            note=f"{rate:,.0f} req/s open loop, {LOADGEN_CONNECTIONS} connections, the worker paused: live p50 {paced['p50'] or 0:.1f} ms, "
            f"{paced['ok']:,}/{paced['sent']:,} 2xx; bare p50 {paced_bare['p50'] or 0:.1f} ms; "
            f"generator send lag p99 {paced['send_lag_p99']:.1f} ms",
        )
    )  # fmt: skip

    log(f"/v1/batch of 100: wrk {WRK_ROUNDS} x {WRK_SECONDS} s on each, {CONNECTIONS} connections, alternating")
    batch, batch_bare = paired(live + "/v1/batch", bare + "/v1/batch", purchases_lua(key), key, folder)
    details["batch"] = {"live": batch, "bare": batch_bare}
    rows.append(
        table.row(
            "/v1/batch (100) events/s accepted", "events/s", batch["rps"] * 100, batch_bare["rps"] * 100,
            target=0.5, load_cpu=max(batch["load_cpu"], batch_bare["load_cpu"]),
            note=f"median of {WRK_ROUNDS} alternating wrk runs, {CONNECTIONS} connections, the worker paused: "
            f"live p50 {batch['p50']:.1f} ms p99 {batch['p99']:.1f} ms, non-2xx {batch['errors']}; requests/s runs live "
            f"{_rounds(batch)}, bare {_rounds(batch_bare)}; {_server_cpu(batch, batch_bare)}",
        )
    )  # fmt: skip
    return rows


def main() -> int:
    ensure_packages()
    if not shutil.which("wrk"):
        if os.geteuid() == 0:
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        else:
            raise SystemExit("bench: wrk is missing; install it with: sudo apt-get install -y wrk")
    folder = Path(tempfile.mkdtemp(prefix="timonier-bench-"))
    os.chmod(folder, 0o755)
    pg_port, redis_port, api_port, bare_port = free_ports(4)
    postgres = live.postgres_server(folder / "pg", pg_port)
    redis = live.redis_server(folder / "redis", redis_port)
    processes: list[subprocess.Popen] = []
    bare_processes: list[subprocess.Popen] = []
    try:
        postgres.start()
        redis.start()
        env = bench_env(folder, postgres.url, redis.url)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        url, key = start_platform(env, api_port, processes)
        bare = start_bare(env, bare_port, bare_processes)
        rows, details = request_rows(url, bare, key, postgres.url, folder, worker_pid=processes[-1].pid)
        stop_processes(bare_processes)
        wait_drained(postgres.url)
        rows += store_rows(env=env, url=url, key=key, database_url=postgres.url, folder=folder, processes=processes)
        print()
        print(table.table(rows))
        table.write_part("ingest", rows, details)
        return 0
    finally:
        stop_processes(bare_processes)
        stop_processes(processes)
        redis.stop()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
