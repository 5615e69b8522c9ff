import pytest
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY

from accounts.models import Authenticator
from cdp import ratelimit
from organizations.models import Role

from .factories import MembershipFactory, ProjectFactory, UserFactory

pytest_plugins = ["tests.live"]  # api_server, celery_worker: the real processes on the test database


def signed_in_client(user) -> Client:
    """A client whose session passed login and the authenticator, as after the real flow."""
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = Authenticator.objects.get(user=user, confirmed=True).persistent_id
    session.save()
    return client


class Personas:
    """A project with an owner, an admin and a member, and an outsider who owns another project."""

    def __init__(self):
        self.project = ProjectFactory()
        self.organization = self.project.organization
        self.owner = MembershipFactory(organization=self.organization, role=Role.OWNER).user
        self.admin = MembershipFactory(organization=self.organization, role=Role.ADMIN).user
        self.member = MembershipFactory(organization=self.organization, role=Role.MEMBER).user
        self.other_project = ProjectFactory()
        self.outsider = MembershipFactory(organization=self.other_project.organization, role=Role.OWNER).user

    def client(self, who: str) -> Client:
        return signed_in_client(getattr(self, who))


@pytest.fixture(autouse=True)
def _static_without_manifest(settings):
    """Tests never run collectstatic: serve static names unhashed instead of from the manifest."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fresh_bad_key_allowance():
    """Every test client sends from 127.0.0.1: each test starts with the address's whole allowance
    of bad API keys (cdp/ratelimit.py), whatever the tests before it sent."""
    ratelimit.bad_keys_reset()


@pytest.fixture
def personas(db) -> Personas:
    return Personas()


@pytest.fixture
def user(db):
    return UserFactory()
