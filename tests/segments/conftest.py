from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """The condition language must answer alike on PostgreSQL and SQLite: `make test` runs the
    segment tests on both (see scripts/testenv.py)."""
    for item in items:
        if Path(item.fspath).is_relative_to(HERE) and not item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.sqlite_too)
