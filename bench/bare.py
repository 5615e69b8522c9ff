"""The bare endpoint as the request rows' limit: the same gunicorn (workers, threads) and the same
Django settings as the live API (TIMONIER_SERVICE=api), but a URL root of one view that reads the
body, parses it with orjson and answers 202 `{}` (bench/bare_settings.py, bench/bare_urls.py).

    python bench/bare.py PORT      # serve it in the foreground (for profiling by hand)
"""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from live import API_THREADS, API_WORKERS  # noqa: E402


def bare_command(port: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "gunicorn"), "timonier.wsgi", "--bind", f"127.0.0.1:{port}",
        "--workers", str(API_WORKERS), "--threads", str(API_THREADS), "--log-level", "warning",
    ]  # fmt: skip


def bare_env(env: dict) -> dict:
    return {
        **env,
        "TIMONIER_SERVICE": "api",
        "DJANGO_SETTINGS_MODULE": "bare_settings",
        "PYTHONPATH": f"{BENCH}:{env.get('PYTHONPATH', '')}".rstrip(":"),
    }


def start_bare(env: dict, port: int, processes: list) -> str:
    """Start the bare gunicorn (appended to `processes` for the caller to stop); its URL."""
    processes.append(subprocess.Popen(bare_command(port), cwd=ROOT, env=bare_env(env)))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()  # noqa: S310 (loopback)
            return url
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the bare endpoint did not start") from None
            time.sleep(0.2)


if __name__ == "__main__":
    import os

    sys.exit(subprocess.call(bare_command(int(sys.argv[1])), cwd=ROOT, env=bare_env(dict(os.environ))))
