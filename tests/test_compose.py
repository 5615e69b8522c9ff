"""docker-compose.yml: the services a user runs, on the ports the documentation gives."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "redis", "platform", "api", "worker", "scheduler", "mailpit"}
APP_SERVICES = ["platform", "api", "worker", "scheduler"]


@pytest.fixture(scope="module")
def services() -> dict:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]


def published_ports(service: dict) -> set[int]:
    """Host ports of a service, from "HOST:CONTAINER", "IP:HOST:CONTAINER" or the long syntax."""
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["published"]))
        else:
            parts = str(entry).split("/")[0].split(":")
            if len(parts) >= 2:
                ports.add(int(parts[-2]))
    return ports


def environment(service: dict) -> dict:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def test_all_services_are_defined(services):
    assert SERVICES <= set(services)


def test_platform_publishes_3010_and_api_3030(services):
    assert 3010 in published_ports(services["platform"])
    assert 3030 in published_ports(services["api"])
    assert 3030 not in published_ports(services["platform"])
    assert 3010 not in published_ports(services["api"])


def test_mailpit_publishes_its_ui_and_smtp(services):
    assert services["mailpit"]["image"].startswith("axllent/mailpit")
    assert {8025, 1025} <= published_ports(services["mailpit"])


def test_mailpit_is_published_on_loopback_only(services):
    """Its UI shows every email caught, verification links included: not for the café's network."""
    entries = services["mailpit"]["ports"]
    assert entries
    for entry in entries:
        host_ip = entry.get("host_ip") if isinstance(entry, dict) else str(entry).split(":")[0]
        assert host_ip == "127.0.0.1", entry


def test_backing_services_images(services):
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"].split(":")[0] == "redis"
    assert services["redis"]["image"].split(":")[1].startswith("7")
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_use_postgres_redis_and_mailpit(services, name):
    service = services[name]
    assert service.get("build") or service.get("image")
    env = environment(service)
    assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert env["EMAIL_URL"] == "smtp://mailpit:1025"
    assert env["SECRET_KEY"]
    depends = service["depends_on"]
    assert {"postgres", "redis"} <= set(depends)
    # Migrations run once, before any app process starts.
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_migrate_is_a_one_shot(services):
    migrate = services["migrate"]
    assert migrate["command"][-2:] == ["migrate", "--noinput"]
    assert migrate.get("restart") == "no"


def test_each_url_root_is_served_by_its_own_service(services):
    assert environment(services["platform"])["TIMONIER_SERVICE"] == "platform"
    assert environment(services["api"])["TIMONIER_SERVICE"] == "api"
    assert "worker" in services["worker"]["command"]
    assert "beat" in services["scheduler"]["command"]


def test_the_image_is_built_from_the_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "collectstatic" in dockerfile
    assert "gunicorn" in dockerfile


def test_the_image_installs_the_hashed_lock_then_timonier_without_dependencies():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    installs = [line for line in lines if "pip install" in line and not line.startswith("#")]
    assert installs[0] == "RUN pip install --require-hashes -r requirements.txt"
    assert "--no-deps" in installs[1] and "--no-build-isolation" in installs[1]
    assert len(installs) == 2  # nothing else, nothing unpinned
