import pytest

from tests.factories import ProjectFactory
from tests.smtp import smtp_server  # noqa: F401 (the real SMTP server fixture, for every workflow test)
from timonier import clock

from .engine import T0


@pytest.fixture
def project(db):
    return ProjectFactory(name="Shop")


@pytest.fixture
def travel():
    """Time frozen at T0 (a Monday, 09:00 UTC) for the test; `travel.advance(...)` moves it."""
    with clock.travel(T0) as traveller:
        yield traveller
