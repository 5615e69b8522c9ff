"""Opens, clicks and unsubscriptions: the signed links an email carries, and what they record.

Each link carries a token signed with the SECRET_KEY (django.core.signing, one salt per kind),
so a token cannot be forged or edited: a click token names the URL it redirects to, and a
changed URL fails the signature, which is what keeps `/e/c/` from being an open redirect.
Tokens do not expire: an email read a year later still tracks and still unsubscribes.
"""

import functools
import hashlib
import hmac
import logging

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils.encoding import force_bytes

from cdp.models import Customer
from cdp.services import customer_identify_enqueue
from organizations.models import Project
from timonier import clock

from .models import Delivery, DeliveryClick, Unsubscription

logger = logging.getLogger(__name__)

OPEN_SALT = "emails.tracking.open"
CLICK_SALT = "emails.tracking.click"
UNSUBSCRIBE_SALT = "emails.tracking.unsubscribe"

# Statuses a delivery may move on from when it is opened / clicked (never back from a later one).
_BEFORE_OPENED = [Delivery.Status.QUEUED, Delivery.Status.SENDING, Delivery.Status.SENT]
_BEFORE_CLICKED = [*_BEFORE_OPENED, Delivery.Status.OPENED]


class BadToken(Exception):
    """A token that was not signed by us (tampered, truncated, or for another kind of link)."""


def open_url(delivery_id: int) -> str:
    return f"{settings.PLATFORM_URL}/e/o/{_sign(delivery_id, OPEN_SALT)}"


def click_url(delivery_id: int, url: str) -> str:
    token = _sign({"d": delivery_id, "u": url}, CLICK_SALT, compress=True)
    return f"{settings.PLATFORM_URL}/e/c/{token}"


def unsubscribe_url(delivery_id: int) -> str:
    # An email asks for it twice (its footer and its List-Unsubscribe header): signed once.
    return _unsubscribe_url(delivery_id, settings.PLATFORM_URL, settings.SECRET_KEY)


@functools.lru_cache(maxsize=256)
def _unsubscribe_url(delivery_id: int, platform_url: str, secret_key: str) -> str:
    del secret_key  # part of the key: _sign reads it from the settings
    return f"{platform_url}/e/u/{_sign(delivery_id, UNSUBSCRIBE_SALT)}"


def _sign(value, salt: str, *, compress: bool = False) -> str:
    # No timestamp (plain Signer): the same link every time it is made, valid as long as the key.
    return _signer(salt, settings.SECRET_KEY).sign_object(value, compress=compress)


class _KeyedSigner(signing.Signer):
    """django.core.signing.Signer with its HMAC key derived once: `salted_hmac` hashes the salt and
    the SECRET_KEY into the HMAC key on every signature (an email signs three or more), here an
    HMAC object keyed once is copied per signature. The same signatures (tests compare)."""

    def __init__(self, *, key: str, salt: str) -> None:
        super().__init__(key=key, salt=salt)
        hasher = getattr(hashlib, self.algorithm)
        derived = hasher(force_bytes(self.salt + "signer") + force_bytes(key)).digest()
        self._keyed = hmac.new(derived, digestmod=hasher)

    def sign_object(self, obj, serializer=signing.JSONSerializer, compress=False) -> str:
        if type(obj) is int and not compress and serializer is signing.JSONSerializer:
            # An id (open and unsubscribe links): its JSON is its digits, too short to compress.
            return self.sign(signing.b64_encode(str(obj).encode()).decode())
        return super().sign_object(obj, serializer=serializer, compress=compress)

    def signature(self, value, key=None) -> str:
        if key is not None and key != self.key:  # unsign's fallback keys
            return super().signature(value, key)
        keyed = self._keyed.copy()
        keyed.update(force_bytes(value))
        return signing.b64_encode(keyed.digest()).decode()


@functools.lru_cache(maxsize=16)
def _signer(salt: str, secret_key: str) -> signing.Signer:
    """One per salt and key (making one is a quarter of signing a link; an email signs three)."""
    return _KeyedSigner(key=secret_key, salt=salt)


def click_urls(delivery_id: int, urls: list[str]) -> list[str]:
    """`click_url(delivery_id, url)` for each of `urls`, the signer looked up once."""
    signer = _signer(CLICK_SALT, settings.SECRET_KEY)
    prefix = f"{settings.PLATFORM_URL}/e/c/"
    return [prefix + signer.sign_object({"d": delivery_id, "u": url}, compress=True) for url in urls]


def _load(token: str, salt: str):
    try:
        return signing.Signer(salt=salt).unsign_object(token)
    except (signing.BadSignature, ValueError) as exc:  # ValueError: a valid signature over bad data
        raise BadToken from exc


def _delivery(delivery_id) -> Delivery:
    if not isinstance(delivery_id, int):
        raise BadToken
    delivery = Delivery.objects.select_related("project", "customer").filter(pk=delivery_id).first()
    if delivery is None:  # signed by us, but the delivery is gone (its project was deleted)
        raise BadToken
    return delivery


def delivery_for_open(token: str) -> Delivery:
    return _delivery(_load(token, OPEN_SALT))


def delivery_for_unsubscribe(token: str) -> Delivery:
    return _delivery(_load(token, UNSUBSCRIBE_SALT))


def click_target(token: str) -> tuple[Delivery, str]:
    payload = _load(token, CLICK_SALT)
    if not isinstance(payload, dict) or not isinstance(payload.get("u"), str):
        raise BadToken
    url = payload["u"]
    if not url.lower().startswith(("http://", "https://")):  # we only ever sign web links
        raise BadToken
    return _delivery(payload.get("d")), url


def open_record(*, delivery: Delivery) -> None:
    """Count an open; the first one sets opened_at and moves the status to opened."""
    now = clock.now()
    Delivery.objects.filter(pk=delivery.pk).update(open_count=F("open_count") + 1)
    Delivery.objects.filter(pk=delivery.pk, opened_at__isnull=True).update(opened_at=now)
    Delivery.objects.filter(pk=delivery.pk, status__in=_BEFORE_OPENED).update(status=Delivery.Status.OPENED)


def click_record(*, delivery: Delivery, url: str) -> None:
    """Record a click. A click implies the email was opened (images may have been blocked)."""
    now = clock.now()
    with transaction.atomic():
        DeliveryClick.objects.create(delivery=delivery, url=url, at=now)
        Delivery.objects.filter(pk=delivery.pk).update(click_count=F("click_count") + 1)
        Delivery.objects.filter(pk=delivery.pk, opened_at__isnull=True).update(opened_at=now)
        Delivery.objects.filter(pk=delivery.pk, clicked_at__isnull=True).update(clicked_at=now)
        Delivery.objects.filter(pk=delivery.pk, status__in=_BEFORE_CLICKED).update(status=Delivery.Status.CLICKED)


def unsubscribe_record(*, delivery: Delivery) -> Unsubscription:
    """Opt the delivery's address out of the project's marketing email, and mark the customer.

    Idempotent: a second click (or a mail client's One-Click POST after the person's own)
    changes nothing. The customer gets the trait `unsubscribed: true` through the CDP inbox,
    like any identify, so it shows on the profile and segments can use it.
    """
    now = clock.now()
    email = delivery.to_email.strip().lower()
    # A test send goes to a teammate's address while rendering some customer: that customer did
    # not ask for anything, so only the address is recorded.
    customer = delivery.customer if delivery.kind == Delivery.Kind.MARKETING else None
    with transaction.atomic():
        unsubscription = Unsubscription.objects.filter(project_id=delivery.project_id, email=email).first()
        created = False
        if unsubscription is None:
            try:
                with transaction.atomic():
                    unsubscription = Unsubscription.objects.create(
                        project_id=delivery.project_id, email=email, customer=customer, delivery=delivery, at=now
                    )
                    created = True
            except IntegrityError:  # a concurrent request recorded it first
                unsubscription = Unsubscription.objects.get(project_id=delivery.project_id, email=email)
        Delivery.objects.filter(pk=delivery.pk, unsubscribed_at__isnull=True).update(
            unsubscribed_at=now, status=Delivery.Status.UNSUBSCRIBED
        )
    if created and customer is not None:
        _enqueue_unsubscribed_trait(delivery.project_id, customer, now)
    if created:
        logger.info("unsubscribed project=%s delivery=%s", delivery.project_id, delivery.pk)
    return unsubscription


def _enqueue_unsubscribed_trait(project_id: int, customer: Customer, at) -> None:
    """An identify `{unsubscribed: true}` for the customer, through the CDP inbox like any other."""
    customer_identify_enqueue(
        customer=customer,
        traits={"unsubscribed": True},
        # One per unsubscription (it is recorded once): a retried request queues nothing new.
        message_id=f"unsubscribe-{project_id}-{customer.pk}-{int(at.timestamp())}",
        at=at,
        source="emails.unsubscribe",
    )


def is_unsubscribed(*, project: Project, email: str, customer=None) -> bool:
    """Whether marketing email to this address (or customer) must be skipped."""
    # The trait is how Customer.io marks it too: an app may also send `unsubscribed: true` itself.
    if customer is not None and (customer.traits or {}).get("unsubscribed") is True:
        return True
    condition = Q(email=email.strip().lower())
    if customer is not None:
        condition |= Q(customer=customer)
    return Unsubscription.objects.filter(condition, project=project).exists()


def unsubscribed_among(deliveries: list[Delivery]) -> set[int]:
    """The ids of the deliveries whose recipient must be skipped, by the rule of is_unsubscribed, in
    one query for them all (a send task checks its whole chunk at once)."""
    if not deliveries:
        return set()
    # The trait is how Customer.io marks it too: an app may also send `unsubscribed: true` itself.
    skipped = {d.pk for d in deliveries if d.customer and (d.customer.traits or {}).get("unsubscribed") is True}
    emails = {d.to_email.strip().lower() for d in deliveries}
    customers = {d.customer_id for d in deliveries if d.customer_id is not None}
    rows = Unsubscription.objects.filter(
        Q(email__in=emails) | Q(customer_id__in=customers), project_id__in={d.project_id for d in deliveries}
    ).values_list("project_id", "email", "customer_id")
    by_email, by_customer = set(), set()
    for project_id, email, customer_id in rows:
        by_email.add((project_id, email))
        if customer_id is not None:
            by_customer.add((project_id, customer_id))
    for d in deliveries:
        if (d.project_id, d.to_email.strip().lower()) in by_email or (d.project_id, d.customer_id) in by_customer:
            skipped.add(d.pk)
    return skipped
