"""Run `ruff check .` and pytest against a throwaway PostgreSQL 15 and Redis.

Usage (what `make test` runs, with the virtualenv's python):

    .venv/bin/python scripts/testenv.py [pytest arguments...]

1. Checks the system packages the tests need (redis-server, chromium, PostgreSQL 15). As root it
   installs what is missing with apt-get; otherwise it prints the command to run and exits 1.
2. Starts PostgreSQL 15 (initdb into a temporary folder; trust auth; 127.0.0.1 on a free port;
   durability off, which is fine for data thrown away) and Redis (127.0.0.1 on a free port).
3. Exports DATABASE_URL, REDIS_URL, CELERY_BROKER_URL, SECRET_KEY and TIMONIER_VAR_DIR for them.
4. Runs `ruff check .`, then pytest with the given arguments; without arguments (the whole suite),
   then once more the tests marked `sqlite_too` on the embedded SQLite.
5. Always stops both servers and removes the temporary folder, on failure and on Ctrl-C too.

Exits with pytest's code if it failed, else ruff's. Standard library only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_TOOLS = ("initdb", "pg_ctl", "postgres", "createdb")
CHROMIUM = Path("/usr/bin/chromium")
DB_NAME = "timonier"
START_TIMEOUT = 60  # seconds for each server to accept connections
IS_ROOT = os.geteuid() == 0


class Interrupted(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C so the `finally` blocks clean up."""


_child: subprocess.Popen | None = None


def log(message: str) -> None:
    print(f"testenv: {message}", flush=True)


def _on_signal(signum, _frame) -> None:
    if _child is not None and _child.poll() is None:
        _child.send_signal(signum)
    raise Interrupted(signal.Signals(signum).name)


def run_child(cmd: list[str], env: dict[str, str]) -> int:
    """Run a foreground command (ruff, pytest); on Ctrl-C let it finish its own shutdown briefly."""
    global _child
    _child = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        return _child.wait()
    except BaseException:
        # Ctrl-C reached the child too (same process group); give it time to report and clean up.
        try:
            _child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _child.terminate()
            try:
                _child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _child.kill()
                _child.wait()
        raise
    finally:
        _child = None


# --- System packages ----------------------------------------------------------------------------


def missing_packages() -> list[str]:
    missing = []
    if not (shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()):
        missing.append("redis-server")
    if not CHROMIUM.exists():
        missing.append("chromium")
    if not all((PG_BIN / tool).exists() for tool in PG_TOOLS):
        missing.append("postgresql-15")
    if not shutil.which("curl"):
        missing.append("curl")  # the browser test runs the guide's curl commands as written
    return missing


def ensure_packages() -> None:
    missing = missing_packages()
    if not missing:
        return
    command = f"apt-get update && apt-get install -y {' '.join(missing)}"
    if not IS_ROOT:
        print(
            f"testenv: missing system packages: {', '.join(missing)}\n"
            f"Install them (Debian 12) with:\n\n    sudo sh -c '{command}'\n",
            file=sys.stderr,
        )
        sys.exit(1)
    log(f"installing {', '.join(missing)}")
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=apt_env)
    subprocess.run(["apt-get", "install", "-y", *missing], check=True, env=apt_env)
    still = missing_packages()
    if still:
        sys.exit(f"testenv: still missing after apt-get install: {', '.join(still)}")


# --- Servers ------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports the kernel picks as free on 127.0.0.1 (all bound at once, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its server tools as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if IS_ROOT else cmd


class Postgres:
    def __init__(self, folder: Path, port: int, *, durable: bool = False) -> None:
        # durable=False trades crash safety for speed (tests); the benchmark keeps it.
        self.durable = durable
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.port = port
        self.started = False

    def _run(self, cmd: list[str], what: str) -> None:
        # cwd: the postgres user may not be allowed into the project folder (a clone under /root).
        result = subprocess.run(cmd, cwd=self.folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            server_log = self.log.read_text(errors="replace") if self.log.exists() else ""
            sys.exit(f"testenv: {what} failed ({result.returncode}):\n{result.stdout}\n{server_log}")

    def start(self) -> None:
        self.folder.mkdir(mode=0o700)
        if IS_ROOT:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                sys.exit("testenv: no `postgres` user (it comes with the postgresql-15 package)")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
        self._run(as_postgres([*initdb, "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]), "initdb")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# testenv.py: a throwaway server\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.folder}'\n"
                "max_connections = 200\n"
            )
            if not self.durable:
                conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        self.started = True  # from here on, stop() must run even if start fails half-way
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(self.data)]
        self._run(
            as_postgres([*pg_ctl, "-l", str(self.log), "-w", "-t", str(START_TIMEOUT), "start"]),
            "pg_ctl start",
        )
        self._run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DB_NAME],
            "createdb",
        )

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        result = subprocess.run(
            as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"]),
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid_file = self.data / "postmaster.pid"
        if result.returncode != 0 and pid_file.exists():
            # pg_ctl could not stop it: end the postmaster by its recorded pid.
            try:
                pid = int(pid_file.read_text().splitlines()[0])
                os.kill(pid, signal.SIGQUIT)
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{DB_NAME}"


class Redis:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.log = folder / "redis.log"
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(mode=0o700)
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "/usr/bin/redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.folder),
                "--appendonly", "yes",
                "--save", "",
                "--daemonize", "no",
                "--logfile", str(self.log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._ping():
                return
            time.sleep(0.1)
        server_log = self.log.read_text(errors="replace") if self.log.exists() else ""
        sys.exit(f"testenv: redis-server did not start:\n{server_log}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


# --- Main ---------------------------------------------------------------------------------------


def main(pytest_args: list[str]) -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    ensure_packages()

    venv_bin = str(Path(sys.executable).parent)  # not resolved: the venv's bin, not the base python's
    env = dict(os.environ)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")

    tmp = Path(tempfile.mkdtemp(prefix="timonier-test-"))
    pg_port, redis_port = free_ports(2)
    postgres = Postgres(tmp / "postgres", pg_port)
    redis = Redis(tmp / "redis", redis_port)
    try:
        log("ruff check .")
        ruff_rc = run_child([sys.executable, "-m", "ruff", "check", "."], env)
        if IS_ROOT:
            # mkdtemp makes a 0700 folder: the postgres user must be able to reach its subfolder.
            os.chmod(tmp, 0o711)
        log(f"starting PostgreSQL 15 on 127.0.0.1:{pg_port} and Redis on 127.0.0.1:{redis_port} in {tmp}")
        postgres.start()
        redis.start()
        (tmp / "var").mkdir()
        env.update(
            DATABASE_URL=postgres.url,
            REDIS_URL=redis.url,
            CELERY_BROKER_URL=redis.url,
            SECRET_KEY="test-only-secret-key-not-for-production-0123456789abcdefghijklmnopqrstuvwxyz",
            TIMONIER_VAR_DIR=str(tmp / "var"),
        )
        log(f"pytest {' '.join(pytest_args)}".rstrip())
        pytest_rc = run_child([sys.executable, "-m", "pytest", *pytest_args], env)
        if not pytest_args and pytest_rc == 0:
            # The whole suite ran on PostgreSQL; what must also hold on the embedded default runs
            # again on SQLite (the database `make run` uses).
            (tmp / "var-sqlite").mkdir()
            sqlite_env = {key: value for key, value in env.items() if key != "DATABASE_URL"}
            sqlite_env["TIMONIER_VAR_DIR"] = str(tmp / "var-sqlite")
            log("pytest -m sqlite_too, on SQLite")
            pytest_rc = run_child([sys.executable, "-m", "pytest", "-m", "sqlite_too", "-q"], sqlite_env)
    except (KeyboardInterrupt, Interrupted) as exc:
        log(f"interrupted ({exc or type(exc).__name__}), cleaning up")
        return 130
    finally:
        # Ignore further Ctrl-C/SIGTERM while cleaning up, so the servers are always stopped.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        redis.stop()
        postgres.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        log("servers stopped, temporary folder removed")

    if ruff_rc != 0:
        log(f"ruff check failed (exit {ruff_rc})")
    if pytest_rc != 0:
        log(f"pytest failed (exit {pytest_rc})")
    return pytest_rc if pytest_rc != 0 else ruff_rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
