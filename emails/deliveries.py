"""Deliveries made in bulk (a workflow pass sends hundreds at once): one query for the keys already
used, one for who unsubscribed, one INSERT, and one send task per chunk sharing an SMTP connection."""

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Q

from cdp.models import Customer
from organizations.models import Project

from . import sender_policy
from .models import Delivery, EmailTemplateVersion, Unsubscription

SEND_CHUNK = 50  # deliveries per send task (one SMTP connection each)


@dataclass
class Send:
    version: EmailTemplateVersion
    customer: Customer
    event: dict | None = None
    workflow_step: str = ""
    # Unique per project: a Send whose key was used before returns that Delivery and sends nothing.
    idempotency_key: str = ""


def deliver_many(sends: list[Send]) -> list[Delivery]:
    """A Delivery per Send, in order: queued (sent after the caller's transaction commits), or
    failed with the reason (no address, unsubscribed), or the earlier one with the same key."""
    if not sends:
        return []
    for send in sends:
        if send.customer.project_id != send.version.template.project_id:
            raise ValueError("the customer and the template belong to different projects")
    projects = {send.customer.project_id for send in sends}
    keys = [send.idempotency_key for send in sends if send.idempotency_key]
    earlier = {
        (d.project_id, d.idempotency_key): d
        for d in Delivery.objects.filter(project_id__in=projects, idempotency_key__in=keys)
    } if keys else {}
    emails = {(send.customer.email or "").strip().lower() for send in sends} - {""}
    customers = {send.customer.pk for send in sends}
    unsubscribed_emails, unsubscribed_customers = set(), set()
    for project_id, email, customer_id in Unsubscription.objects.filter(
        Q(email__in=emails) | Q(customer_id__in=customers), project_id__in=projects
    ).values_list("project_id", "email", "customer_id"):
        unsubscribed_emails.add((project_id, email))
        unsubscribed_customers.add(customer_id)

    refused_from = _refused_from(sends)

    result: list[Delivery | None] = []
    new: list[Delivery] = []
    seen_keys: dict[tuple, Delivery] = {}
    for send in sends:
        key = (send.customer.project_id, send.idempotency_key)
        if send.idempotency_key and (key in earlier or key in seen_keys):
            result.append(earlier.get(key) or seen_keys[key])
            continue
        delivery = _delivery(send, unsubscribed_emails, unsubscribed_customers)
        if delivery.status == Delivery.Status.QUEUED and (problem := refused_from.get(send.version.pk)):
            delivery.status, delivery.error = Delivery.Status.FAILED, f"skipped: {problem}"
        if send.idempotency_key:
            seen_keys[key] = delivery
        new.append(delivery)
        result.append(delivery)
    try:
        with transaction.atomic():  # a savepoint: a key used concurrently fails this insert alone
            Delivery.objects.bulk_create(new)
    except IntegrityError:
        for delivery in new:  # one by one, each taking the concurrent one's place on conflict
            try:
                with transaction.atomic():
                    delivery.save()
            except IntegrityError:
                delivery.pk = Delivery.objects.get(
                    project_id=delivery.project_id, idempotency_key=delivery.idempotency_key
                ).pk
    queued = [d.pk for d in new if d.status == Delivery.Status.QUEUED]
    if queued:
        from .tasks import deliveries_send_task

        chunks = [queued[i : i + SEND_CHUNK] for i in range(0, len(queued), SEND_CHUNK)]
        transaction.on_commit(lambda: [deliveries_send_task.delay(chunk) for chunk in chunks])
    return result


def _refused_from(sends: list[Send]) -> dict[int, str]:
    """Why each version whose From address the project may no longer use is refused, by version id.

    The address was allowed when the version was published; its domain may have been removed from
    the project's sending domains since, and a workflow keeps sending that version. No query when
    every From is on the server's own domain (or blank: the default), the common case.
    """
    versions = {send.version.pk: send.version for send in sends}
    to_check = {
        pk: version
        for pk, version in versions.items()
        if version.from_email and sender_policy.from_address_problem(project=_NO_DOMAINS, address=version.from_email)
    }
    if not to_check:
        return {}
    projects = {
        project.pk: project
        for project in Project.objects.filter(pk__in={v.template.project_id for v in to_check.values()}).only(
            "pk", "sending_domains"
        )
    }
    refused = {}
    for pk, version in to_check.items():
        project = projects[version.template.project_id]
        if problem := sender_policy.from_address_problem(project=project, address=version.from_email):
            refused[pk] = f"the From address {version.from_email} may no longer be used: {problem}"
    return refused


class _NoDomains:
    """A project that declared no sending domain: only the server's own domain passes."""

    sending_domains: tuple = ()


_NO_DOMAINS = _NoDomains()


def _delivery(send: Send, unsubscribed_emails: set, unsubscribed_customers: set) -> Delivery:
    customer = send.customer
    to_email = (customer.email or "").strip()
    delivery = Delivery(
        project_id=customer.project_id,
        template=send.version.template,
        template_version=send.version,
        customer=customer,
        to_email=to_email,
        event=send.event,
        workflow_step=send.workflow_step[:100],
        idempotency_key=send.idempotency_key,
        kind=Delivery.Kind.MARKETING,
        status=Delivery.Status.QUEUED,
    )
    # The same rule as tracking.is_unsubscribed, for many at once: the trait, the address, the customer.
    unsubscribed = (
        (customer.traits or {}).get("unsubscribed") is True
        or (customer.project_id, to_email.lower()) in unsubscribed_emails
        or customer.pk in unsubscribed_customers
    )
    if not to_email:
        delivery.status, delivery.error = Delivery.Status.FAILED, "skipped: the customer has no email address"
    elif unsubscribed:
        delivery.status, delivery.error = Delivery.Status.FAILED, "skipped: the customer has unsubscribed"
    return delivery
