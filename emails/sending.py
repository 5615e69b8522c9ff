"""Sending one queued Delivery through Django's email backend (EMAIL_URL)."""

import logging
from email.utils import formataddr, parseaddr
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection, make_msgid
from django.db.models import Case, F, Value, When

from timonier import clock

from . import tracking
from .models import Delivery
from .rendering import RenderedEmail, RenderError, render_delivery

logger = logging.getLogger(__name__)


def from_address(*, from_name: str, from_email: str) -> str:
    """The From header: the template's address, else the project default, with the template's name."""
    default_name, default_email = parseaddr(settings.DEFAULT_FROM_EMAIL)
    return formataddr((from_name or default_name, from_email or default_email))


def compose(delivery: Delivery, rendered: RenderedEmail) -> EmailMultiAlternatives:
    source = delivery.template_version or delivery.template
    unsubscribe_url = tracking.unsubscribe_url(delivery.pk)
    domain = urlsplit(settings.PLATFORM_URL).hostname or "localhost"
    headers = {
        "Message-ID": make_msgid(domain=domain),
        # RFC 2369 and RFC 8058: mail clients show an unsubscribe button that POSTs here.
        "List-Unsubscribe": f"<{unsubscribe_url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    message = EmailMultiAlternatives(
        subject=rendered.subject,
        body=rendered.text,
        from_email=from_address(from_name=source.from_name, from_email=source.from_email),
        to=[delivery.to_email],
        reply_to=[source.reply_to] if source.reply_to else None,
        headers=headers,
    )
    message.attach_alternative(rendered.html, "text/html")
    return message


def deliveries_send(*, delivery_ids: list[int]) -> int:
    """Send each queued delivery of `delivery_ids` over one SMTP connection; returns how many were sent."""
    sent = 0
    with get_connection() as connection:
        for delivery_id in delivery_ids:
            delivery = delivery_send(delivery_id=delivery_id, connection=connection)
            sent += delivery is not None and delivery.status == Delivery.Status.SENT
    return sent


def delivery_send(*, delivery_id: int, connection=None) -> Delivery | None:
    """Send a queued delivery once; None when another run has it (or had it) already.

    Claimed by a conditional UPDATE (queued → sending), so running this twice sends one email.
    A failure is recorded on the delivery (status failed, the error) rather than retried: a
    retried SMTP conversation that had in fact been accepted would send the email twice.
    """
    claimed = Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.QUEUED).update(
        status=Delivery.Status.SENDING
    )
    if not claimed:
        return None
    delivery = Delivery.objects.select_related(
        "project", "template__project", "template_version__template__project", "customer"
    ).get(pk=delivery_id)

    if delivery.kind == Delivery.Kind.MARKETING and tracking.is_unsubscribed(
        project=delivery.project, email=delivery.to_email, customer=delivery.customer
    ):  # unsubscribed between deliver() and now
        return _fail(delivery, "skipped: the recipient has unsubscribed")
    try:
        rendered = render_delivery(delivery)
    except RenderError as exc:
        return _fail(delivery, f"could not render the template: {exc}")
    message = compose(delivery, rendered)
    message.connection = connection
    try:
        message.send(fail_silently=False)
    except Exception as exc:  # smtplib errors, refused connections, timeouts: the delivery says which
        logger.warning("email delivery=%s failed: %s", delivery.pk, exc)
        return _fail(delivery, f"{type(exc).__name__}: {exc}")
    delivery.status = Delivery.Status.SENT
    delivery.sent_at = clock.now()
    delivery.message_id = message.extra_headers["Message-ID"]
    delivery.error = ""
    # One statement: an open may already have been recorded (a fast reader), so the status moves to
    # sent only from sending, never back.
    Delivery.objects.filter(pk=delivery.pk).update(
        sent_at=delivery.sent_at,
        message_id=delivery.message_id,
        status=Case(
            When(status=Delivery.Status.SENDING, then=Value(Delivery.Status.SENT)), default=F("status")
        ),
    )
    return delivery


def _fail(delivery: Delivery, error: str) -> Delivery:
    delivery.status = Delivery.Status.FAILED
    delivery.error = error
    Delivery.objects.filter(pk=delivery.pk).update(status=delivery.status, error=error)
    return delivery
