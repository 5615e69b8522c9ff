"""What a newcomer inherits: `make run` answers this machine only, and the README's production
settings pass `manage.py check --deploy` without a warning."""

import ipaddress
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_embedded_run import VENV_BIN, free_ports, http_get, parse_procfile

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60


# --- make run listens on 127.0.0.1 ----------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on `port`, from Linux's /proc/net/tcp{,6}."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, hex_port = local.rsplit(":", 1)
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(host)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(raw)))
    return found


def start_platform(tmp_path: Path, **extra: str) -> tuple[subprocess.Popen, int]:
    """The Procfile's platform command, run by /bin/sh as honcho runs it, on a free port."""
    [port] = free_ports(1)
    env = {k: v for k, v in os.environ.items() if k not in ("BIND_ADDRESS", "TIMONIER_SERVICE")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        SECRET_KEY="deploy-defaults-test-secret-key",
        TIMONIER_VAR_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REDIS_URL="",
        PLATFORM_PORT=str(port),
        **extra,
    )
    log = open(tmp_path / "platform.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        parse_procfile()["platform"],
        shell=True,
        executable="/bin/sh",
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return process, port


def wait_listening(process: subprocess.Popen, port: int, tmp_path: Path) -> set[str]:
    deadline = time.monotonic() + START_TIMEOUT
    while not (addresses := listening_addresses(port)):
        assert process.poll() is None, (tmp_path / "platform.log").read_text()
        assert time.monotonic() < deadline, "the platform did not start listening"
        time.sleep(0.2)
    return addresses


def answers(url: str) -> int:
    """The status of GET `url` once a worker answers (the master listens before its workers have booted)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return http_get(url)[0]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


@pytest.mark.slow
def test_make_run_listens_on_loopback_only_by_default(tmp_path):
    process, port = start_platform(tmp_path)
    try:
        assert wait_listening(process, port, tmp_path) == {"127.0.0.1"}
        assert answers(f"http://127.0.0.1:{port}/no-such-page") == 404  # Django answers there
    finally:
        stop(process)


@pytest.mark.slow
def test_bind_address_chooses_where_make_run_listens(tmp_path):
    # Another loopback address stands for 0.0.0.0: the setting is honoured, nothing is opened.
    process, port = start_platform(tmp_path, BIND_ADDRESS="127.0.0.2", ALLOWED_HOSTS="127.0.0.2")
    try:
        assert wait_listening(process, port, tmp_path) == {"127.0.0.2"}
        assert answers(f"http://127.0.0.2:{port}/no-such-page") == 404
    finally:
        stop(process)


def test_the_env_example_documents_bind_address():
    assert re.search(r"^# BIND_ADDRESS=127\.0\.0\.1$", (ROOT / ".env.example").read_text(), re.MULTILINE)


# --- check --deploy with the README's production settings ----------------------------------------


def readme_production_environment() -> dict[str, str]:
    """The KEY=VALUE lines of the README's production section's environment block."""
    section = (ROOT / "README.md").read_text().split("## Running in production", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n((?:\s*[A-Z][A-Z0-9_]*=.*\n)+)\s*```", section)
    [block] = [block for block in blocks if "BEHIND_PROXY=" in block]
    environment = {}
    for line in block.splitlines():
        name, value = line.strip().split("=", 1)
        environment[name] = value.strip('"')
    return environment


def test_the_readme_production_environment_is_behind_a_proxy_without_debug():
    environment = readme_production_environment()
    assert environment["BEHIND_PROXY"] == "true"
    assert environment["DEBUG"] == "false"
    assert environment["PLATFORM_URL"].startswith("https://") and environment["API_URL"].startswith("https://")
    assert environment["SECRET_KEY"].startswith("<")  # a placeholder to fill, never a key to copy


@pytest.mark.parametrize("service", ["platform", "api"])
def test_check_deploy_is_clean_with_the_readme_production_settings(tmp_path, service):
    environment = readme_production_environment()
    environment["SECRET_KEY"] = secrets.token_urlsafe(50)  # what the placeholder says to generate
    # Nothing of the test run's own environment (make test's servers, DJANGO_ALLOW_ASYNC_UNSAFE of the
    # browser tests): the README's lines alone, as on a production machine.
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env.update(environment, TIMONIER_SERVICE=service, TIMONIER_VAR_DIR=str(tmp_path))

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output


# --- The hashed lock -----------------------------------------------------------------------------

LOCKS = {"runtime": ROOT / "requirements.txt", "dev": ROOT / "requirements-dev.txt"}


def lock_entries(path: Path) -> dict[str, tuple[str, str, list[str]]]:
    """{normalised name: (version, marker, hashes)} of a `--generate-hashes` lock file."""
    from packaging.utils import canonicalize_name

    entries = {}
    for requirement in re.split(r"\n(?=[A-Za-z0-9])", path.read_text().split("\n", 2)[2]):
        head = requirement.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        name_version, _, marker = head.partition(";")
        name, version = name_version.strip().split("==")
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", requirement)
        entries[canonicalize_name(name.split("[")[0])] = (version, marker.strip(), hashes)
    return entries


def pyproject_pins(extra: str | None) -> dict[str, str]:
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    pins = {}
    for line in listed:
        requirement = Requirement(line)
        [specifier] = requirement.specifier
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_every_locked_package_is_pinned_with_hashes():
    for path in LOCKS.values():
        entries = lock_entries(path)
        assert len(entries) > 40, path
        assert [name for name, (_, _, hashes) in entries.items() if not hashes] == [], path


def test_the_locks_pin_pyprojects_versions_and_agree_with_each_other():
    runtime, dev = lock_entries(LOCKS["runtime"]), lock_entries(LOCKS["dev"])
    for name, version in pyproject_pins(None).items():
        assert runtime[name][0] == version, name
    for name, version in pyproject_pins("dev").items():
        assert dev[name][0] == version, name
    assert {name: entry[0] for name, entry in runtime.items()} == {name: dev[name][0] for name in runtime}
    assert "setuptools" in runtime  # the build backend: installing Timonier fetches nothing unpinned


def test_this_environment_is_exactly_the_dev_lock():
    """What the tests run on is what `make venv` and the Dockerfile install elsewhere."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.markers import Marker

    wrong = {}
    for name, (pinned, marker, _) in lock_entries(LOCKS["dev"]).items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert wrong == {}


def test_make_installs_the_dev_lock_with_hashes_and_reinstalls_when_it_changes():
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert "$(DEV_LOCK)" in stamp.group(1).split()
    assert re.search(r"^DEV_LOCK := requirements-dev\.txt$", makefile, re.MULTILINE)
    recipe = stamp.group(2)
    assert "pip install --require-hashes -r $(DEV_LOCK)" in recipe
    assert "pip install --no-deps --no-build-isolation -e ." in recipe
    assert [line for line in recipe.splitlines() if "pip install" in line and "--require-hashes" not in line] == [
        "\t$(BIN)/python -m pip install --no-deps --no-build-isolation -e ."
    ]
    assert re.search(r"^lock:", makefile, re.MULTILINE)
