""".env.example documents every variable the settings read, and sets none but SECRET_KEY."""

import re
import subprocess
import sys
from pathlib import Path

from honcho.environ import parse as honcho_parse

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".env.example"

# env.str("NAME", ...), env.bool("NAME"), env("NAME"), os.environ.get("NAME"), os.getenv("NAME")
READ = re.compile(
    r"""\b(?:env(?:\.\w+)?|os\.environ\.get|os\.getenv|os\.environ\.setdefault)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
)
DOCUMENTED = re.compile(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def variables_read_by_settings() -> set[str]:
    names = set(READ.findall((ROOT / "timonier" / "settings.py").read_text()))
    names.discard("DJANGO_SETTINGS_MODULE")
    return names


def test_the_settings_read_variables():
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "EMAIL_URL"} <= variables_read_by_settings()


def test_every_variable_the_settings_read_is_documented():
    documented = set(DOCUMENTED.findall(EXAMPLE.read_text()))
    missing = sorted(variables_read_by_settings() - documented)
    assert not missing, f"add to .env.example: {missing}"


def test_nothing_but_an_empty_secret_key_is_set():
    """Every other line is a commented-out default, so a fresh `.env` changes nothing but the key."""
    active = re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", EXAMPLE.read_text(), re.MULTILINE)
    assert active == [("SECRET_KEY", "")]
    # honcho (`make run`) exports `.env` to the processes too, and reads the same nothing.
    assert honcho_parse(EXAMPLE.read_text()) == {}


def test_init_env_writes_a_fresh_secret_key(tmp_path):
    """scripts/init_env.py (run by `make run`) in a copy of the project folder."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "init_env.py").write_text((ROOT / "scripts" / "init_env.py").read_text())
    (tmp_path / ".env.example").write_text(EXAMPLE.read_text())

    def run():
        subprocess.run([sys.executable, "scripts/init_env.py"], cwd=tmp_path, check=True, capture_output=True)
        return (tmp_path / ".env").read_text()

    first = run()
    key = re.search(r"^SECRET_KEY=(.+)$", first, re.MULTILINE).group(1)
    assert len(key) >= 50 and re.fullmatch(r"[A-Za-z0-9_-]+", key)
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0
    assert honcho_parse(first) == {"SECRET_KEY": key}
    assert run() == first  # an existing .env is kept
