"""Tenancy, generated from the URLconfs: no route lets one project reach another's objects.

Every route of the platform (`timonier/urls_platform.py`) and of the API (`timonier/urls_api.py`)
is found by walking the resolver, so a new view is tried the day it is added:

- a platform route under an organization (`org_slug`, and `project_slug` for a project's pages) is
  requested with every method by the owner of ANOTHER organization's project, against project A's
  objects: the answer is 404 (405 for a method the route does not take), never 200, 3xx or 500;
- an API route is requested with every method with ANOTHER project's secret key: a route naming an
  object (a path kwarg) answers 404; a route naming none acts on the key's own project;
- either way, no row of project A changes (every model with a path to A's project or organization,
  found from the models, compared before and after, with the other project's inbox processed), and
  no answer carries data only A has.

A path kwarg is filled from SAMPLE_VALUES: a factory making the object in project A, looked up as
`<the path segment before it>/<kwarg>` first (`pk` names a different object on each collection),
then as `<kwarg>`. A kwarg with no entry fails its route's test: "no sample value for <kwarg> of
<route>: add one". Routes that are deliberately not project-scoped are listed with their reason.
"""

import json
import re
import secrets
from functools import cached_property
from urllib.parse import urlencode

import pytest
from django.apps import apps
from django.core.cache import cache
from django.db import models
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from cdp.models import Customer
from cdp.processing import commands_process
from emails.models import EmailTemplate
from organizations.api_keys import api_key_create
from organizations.models import Invitation, Membership, Organization, Project, Role
from segments.models import Segment
from tests.conftest import Personas
from tests.factories import MembershipFactory
from timonier import clock
from workflows.models import Run, Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db

PLATFORM_URLCONF = "timonier.urls_platform"
API_URLCONF = "timonier.urls_api"
API_MIDDLEWARE = ["django.middleware.security.SecurityMiddleware", "cdp.api.http.CorsMiddleware"]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MARK = "only-project-a-has-this"  # in A's objects, never in a request: an answer holding it leaked A's data


class ProjectA:
    """Project A of the personas, and one object of each kind in it, made on first use."""

    def __init__(self, personas: Personas):
        self.personas = personas
        self.project = personas.project
        self.organization = personas.organization

    @cached_property
    def customer(self) -> Customer:
        now = clock.now()
        return Customer.objects.create(
            project=self.project,
            external_id="user_a",
            traits={"email": f"{MARK}@example.com", "secret": MARK},
            email=f"{MARK}@example.com",
            first_seen_at=now,
            last_seen_at=now,
        )

    @cached_property
    def segment(self) -> Segment:
        condition = {"type": "trait", "name": "secret", "op": "equals", "value": MARK}
        return Segment.objects.create(project=self.project, name=MARK, condition=condition)

    @cached_property
    def template(self) -> EmailTemplate:
        return EmailTemplate.objects.create(project=self.project, name=MARK, subject=MARK)

    @cached_property
    def api_key(self):
        return api_key_create(project=self.project, name=MARK)[0]

    @cached_property
    def membership(self) -> Membership:
        return MembershipFactory(organization=self.organization, role=Role.MEMBER)

    @cached_property
    def invitation(self) -> Invitation:
        return Invitation.objects.create(
            organization=self.organization, email=f"{MARK}@example.com", token_hash=secrets.token_hex(32)
        )

    @cached_property
    def workflow(self) -> Workflow:
        definition = {"trigger": {"type": "api"}, "frequency": {"type": "once"}, "steps": [], "edges": []}
        return Workflow.objects.create(project=self.project, name=MARK, definition=definition)

    @cached_property
    def run(self) -> Run:
        version = WorkflowVersion.objects.create(workflow=self.workflow, number=1, definition=self.workflow.definition)
        return Run.objects.create(
            project=self.project, workflow=self.workflow, version=version, customer=self.customer, occurrence="api:a"
        )


# One line per kwarg (or `<collection>/<kwarg>`): the value that names an object of project A.
SAMPLE_VALUES = {
    "org_slug": lambda a: a.organization.slug,
    "project_slug": lambda a: a.project.slug,
    "customer_id": lambda a: a.customer.external_id,
    "segment_id": lambda a: a.segment.pk,
    "workflow_id": lambda a: a.workflow.pk,
    "run_id": lambda a: a.run.pk,
    "customers/pk": lambda a: a.customer.pk,
    "segments/pk": lambda a: a.segment.pk,
    "email-templates/pk": lambda a: a.template.pk,
    "api-keys/pk": lambda a: a.api_key.pk,
    "members/pk": lambda a: a.membership.pk,
    "invitations/pk": lambda a: a.invitation.pk,
    "workflows/pk": lambda a: a.workflow.pk,
    "runs/pk": lambda a: a.run.pk,
}

# Platform routes outside any organization, and why that is right.
NOT_PROJECT_SCOPED = {
    "accounts:signup": "signing up comes before any organization",
    "accounts:signup_sent": "the page after signing up",
    "accounts:verification_resend": "resending a verification email, before any organization",
    "accounts:verify": "the link of a verification email, a signed token",
    "accounts:login": "signing in",
    "accounts:login_code": "the authenticator code of signing in",
    "accounts:logout": "signing out",
    "accounts:account": "the signed-in user's own account",
    "organizations:selector": "lists only the user's own organizations (tests/test_organizations.py)",
    "organizations:organization_new": "creates a new organization of the user",
    "organizations:invitation": "the link of an invitation email, a token; accepting needs the invited account",
    "emails:image": "uploaded email images are public: email clients load them without a session",
    "emails_tracking:open": "the open pixel of a sent email, a signed token",
    "emails_tracking:click": "the click redirect of a sent email, a signed token",
    "emails_tracking:unsubscribe": "the unsubscribe link of a sent email, a signed token",
}
# API routes that take no key.
NOT_KEY_SCOPED = {
    "health": "the health check: no key, no data",
    "openapi": "the API's contract, the same for everyone",
}
# API routes naming an object that rightly answer other than 404 with another project's key.
ACTS_ON_THE_KEYS_PROJECT = {
    ("customer", "DELETE"): "erasure is queued by customer_id in the key's own project, known or not yet known "
    "there (its calls may still be in the inbox)",
}


def _routes(urlconf: str) -> list[tuple[str, str]]:
    """(name, route) of every URL pattern, `namespace:name` for included apps."""

    def walk(patterns, prefix: str, namespace: str | None):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace)
            else:
                assert isinstance(pattern, URLPattern)
                assert pattern.name, f"{prefix}{pattern.pattern} has no name: name it so this test can list it"
                yield f"{namespace}:{pattern.name}" if namespace else pattern.name, prefix + str(pattern.pattern)

    return list(walk(get_resolver(urlconf).url_patterns, "", None))


PLATFORM_ROUTES = _routes(PLATFORM_URLCONF)
API_ROUTES = _routes(API_URLCONF)
KWARG = re.compile(r"<(?:\w+:)?(\w+)>")


def _kwargs(route: str) -> list[str]:
    return KWARG.findall(route)


def _url(route: str, a: ProjectA) -> str:
    """The route's path with each kwarg naming an object of project A."""

    def value(match: re.Match) -> str:
        kwarg = match.group(1)
        collection = route[: match.start()].rstrip("/").rsplit("/", 1)[-1]
        factory = SAMPLE_VALUES.get(f"{collection}/{kwarg}") or SAMPLE_VALUES.get(kwarg)
        if factory is None:
            pytest.fail(f"no sample value for {kwarg} of {route}: add one to SAMPLE_VALUES")
        return str(factory(a))

    return "/" + KWARG.sub(value, route)


def _scope_lookup(model: type[models.Model], depth: int = 3) -> tuple[str, type] | None:
    """The lookup from `model` to a Project or an Organization (`customer__project`), if any."""
    if model in (Project, Organization):
        return "pk", model
    if depth == 0:
        return None
    relations = [f for f in model._meta.concrete_fields if f.many_to_one or f.one_to_one]
    for field in relations:
        if field.related_model in (Project, Organization):
            return field.name, field.related_model
    for field in relations:
        found = _scope_lookup(field.related_model, depth - 1) if field.related_model is not model else None
        if found is not None and found[0] != "pk":
            return f"{field.name}__{found[0]}", found[1]
    return None


def _rows_of(a: ProjectA) -> dict[str, list[dict]]:
    """Every row of project A (and of its organization), model by model."""
    rows = {}
    for model in apps.get_models():
        found = _scope_lookup(model)
        if found is None:
            continue
        lookup, target = found
        owner = a.project if target is Project else a.organization
        rows[model._meta.label] = list(model.objects.filter(**{lookup: owner.pk}).order_by("pk").values())
    return rows


def _allowed(response) -> set[str]:
    return {m.strip().upper() for m in response.get("Allow", "").split(",") if m.strip()}


@pytest.fixture
def a(personas) -> ProjectA:
    return ProjectA(personas)


# --- The walk itself -----------------------------------------------------------------------------


def test_the_walk_finds_the_routes_of_both_urlconfs():
    platform, api = dict(PLATFORM_ROUTES), dict(API_ROUTES)
    assert platform["cdp:customer"] == "o/<slug:org_slug>/<slug:project_slug>/customers/<int:pk>"
    assert platform["organizations:members"] == "o/<slug:org_slug>/-/members"
    assert api["customer-events"] == "v1/customers/<str:customer_id>/events"
    assert api["api-segment"] == "v1/segments/<str:segment_id>"


def test_every_platform_route_is_under_an_organization_or_listed_with_its_reason():
    unlisted = [name for name, route in PLATFORM_ROUTES if "org_slug" not in _kwargs(route)]
    assert sorted(set(unlisted) - set(NOT_PROJECT_SCOPED)) == []
    assert sorted(set(NOT_PROJECT_SCOPED) - set(unlisted)) == [], "listed but gone or scoped: remove it"


def test_a_route_whose_kwarg_has_no_sample_value_fails_naming_it(a):
    route = "o/<slug:org_slug>/<slug:project_slug>/journeys/<int:journey_id>"
    with pytest.raises(pytest.fail.Exception, match=re.escape(f"no sample value for journey_id of {route}: add one")):
        _url(route, a)


def test_the_rows_compared_reach_project_a_through_its_relations(a):
    run = a.run  # with a customer, a workflow and a version
    rows = _rows_of(a)
    assert [row["id"] for row in rows["workflows.Run"]] == [run.pk]
    assert [row["id"] for row in rows["workflows.WorkflowVersion"]] == [run.version_id]
    assert [row["id"] for row in rows["organizations.Membership"]] == sorted(
        Membership.objects.filter(organization=a.organization).values_list("pk", flat=True)
    )
    assert not rows["organizations.ApiKey"]


# --- The platform: a member of another project -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "route"),
    [(name, route) for name, route in PLATFORM_ROUTES if "org_slug" in _kwargs(route)],
    ids=[name for name, route in PLATFORM_ROUTES if "org_slug" in _kwargs(route)],
)
def test_platform_route_is_404_to_a_member_of_another_project(a, name, route):
    url = _url(route, a)
    before = _rows_of(a)
    client = a.personas.client("outsider")
    form = {"name": "Hijack", "slug": "hijack", "email": "hijack@example.com", "role": "owner", "subject": "Hijack"}
    answers = {}
    for method in METHODS:
        response = client.generic(method, url, data=urlencode(form), content_type="application/x-www-form-urlencoded")
        answers[method] = response.status_code
        assert response.status_code in (404, 405), f"{method} {url} answered {response.status_code}"
        if response.status_code == 405:
            assert method not in _allowed(response), f"{method} {url}: 405 though Allow lists it"
        assert MARK not in response.content.decode(errors="replace")
    assert 404 in answers.values(), f"{url}: no method reached the view ({answers})"
    assert _rows_of(a) == before, f"{name} changed project A's rows"


# --- The API: another project's secret key ---------------------------------------------------------


@pytest.fixture
def other_key(a, settings) -> str:
    settings.ROOT_URLCONF = API_URLCONF
    settings.MIDDLEWARE = API_MIDDLEWARE
    cache.clear()
    return api_key_create(project=a.personas.other_project, name="other")[1]


def _api_body(a: ProjectA) -> str:
    return json.dumps(
        {
            "customer_id": a.customer.external_id,
            "event": "hijack",
            "traits": {"secret": "hijacked"},
            "name": "Hijack",
            "condition": {"type": "trait", "name": "secret", "op": "equals", "value": MARK},
        }
    )


@pytest.mark.parametrize(
    ("name", "route"),
    [(name, route) for name, route in API_ROUTES if name not in NOT_KEY_SCOPED],
    ids=[name for name, route in API_ROUTES if name not in NOT_KEY_SCOPED],
)
def test_api_route_with_another_projects_key_never_reaches_project_a(a, other_key, name, route):
    url = _url(route, a)
    body = _api_body(a)
    before = _rows_of(a)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    answers = {}
    for method in METHODS:
        response = client.generic(
            method, url, data=body if method in ("POST", "PUT", "PATCH") else "", content_type="application/json"
        )
        answers[method] = response.status_code
        content = response.content.decode(errors="replace")
        assert response.status_code < 500, f"{method} {url} answered {response.status_code}: {content}"
        assert MARK not in content, f"{method} {url} answered project A's data"
        if response.status_code == 405:
            assert method not in _allowed(response), f"{method} {url}: 405 though Allow lists it"
        elif _kwargs(route) and (name, method) not in ACTS_ON_THE_KEYS_PROJECT:
            assert response.status_code == 404, f"{method} {url} answered {response.status_code}: {content}"
    assert any(status != 405 for status in answers.values()), f"{url}: no method reached the view ({answers})"
    while commands_process(project_id=a.personas.other_project.pk).commands:
        pass  # what the other project's calls do once a worker applies them
    assert _rows_of(a) == before, f"{name} changed project A's rows"


def test_listed_exceptions_are_routes_that_exist():
    names = dict(API_ROUTES)
    assert set(NOT_KEY_SCOPED) <= set(names)
    for name, method in ACTS_ON_THE_KEYS_PROJECT:
        assert name in names and _kwargs(names[name]), (name, method)
