"""Deliveries follow their customer through the CDP's merges and erasures."""

from django.dispatch import receiver

from cdp.signals import customer_merged, customers_removing

from .models import Delivery

ERASED_ADDRESS = ""


@receiver(customer_merged, dispatch_uid="emails.deliveries_follow_merge")
def deliveries_follow_merge(sender, *, project_id: int, secondary_id: int, primary_id: int, **kwargs) -> None:
    """The merged customer's deliveries become the primary's (its page lists them)."""
    Delivery.objects.filter(project_id=project_id, customer_id=secondary_id).update(customer_id=primary_id)


@receiver(customers_removing, dispatch_uid="emails.forget_erased_addresses")
def forget_erased_addresses(sender, *, project_id: int, erased=(), **kwargs) -> None:
    """Right to erasure: the deliveries stay as counts (sent, opened…), without the address.
    An `Unsubscription` keeps its address: it is what stops later emails to it."""
    if erased:
        Delivery.objects.filter(project_id=project_id, customer_id__in=list(erased)).update(
            to_email=ERASED_ADDRESS, customer=None
        )
