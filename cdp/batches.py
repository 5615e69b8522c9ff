"""One batch: the oldest commands of one partition of a project's inbox, applied in one transaction.

`batch_process` takes the partition's lock, claims its oldest commands, reads what their calls
name (locking those customers' rows), resolves the calls in memory (`cdp/resolution.py`), writes
the result with bulk SQL and deletes the commands, in one transaction. Why that is correct while
other partitions of the project are processed at the same time: see `cdp/processing.py`.
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.db import IntegrityError, OperationalError, connection, transaction

from timonier import clock

from . import signals, storage
from .models import Command, Customer, Event, Identity, Suppression
from .resolution import ANONYMOUS_ID, CUSTOMER_ID, Profile, Resolution, references

logger = logging.getLogger(__name__)

MAX_MESSAGES_PER_BATCH = 5000
# PostgreSQL's deadlock and serialisation failures: a concurrent batch won, this one may retry.
RETRYABLE_SQLSTATES = {"40P01", "40001"}
# Whether a call was stored before is left to the unique constraint on (project, message_id) on
# PostgreSQL: the batch writes its events without looking (most calls are new, and the lookup is
# one index probe per call that the COPY's own insert into that index repeats anyway). A repeat
# makes the COPY fail, the whole transaction rolls back, and the batch runs again looking first;
# after one, this process looks first for DUPLICATE_LOOKUP_SECONDS (a client retrying a burst).
MESSAGE_UNIQUE = "cdp_event_message_unique"
DUPLICATE_LOOKUP_SECONDS = 60.0
_duplicate_seen_at: float | None = None


@dataclass
class BatchResult:
    commands: int = 0
    messages: int = 0
    duplicates: int = 0
    suppressed: int = 0
    events: int = 0
    customers_created: int = 0
    customers_merged: int = 0
    customers_deleted: int = 0


class Conflict(Exception):
    """A batch of another partition changed customers or identities this batch had read: its
    transaction is rolled back whole, and the batch can be run again at once."""


def batch_process(*, project_id: int, partition: int, max_commands: int) -> BatchResult | None:
    """Apply the oldest commands of one partition of a project, in one transaction.

    None when another worker holds the partition; an empty result when it has no commands.
    Raises Conflict when a concurrent batch got in the way (nothing of this one is kept).
    """
    global _duplicate_seen_at
    try:
        return _batch_process(project_id, partition, max_commands)
    except IntegrityError as exc:  # a row this batch inserts was inserted meanwhile, or one it names deleted
        if getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) == MESSAGE_UNIQUE:
            _duplicate_seen_at = time.monotonic()  # a repeat, stored before or meanwhile: look from now on
        raise Conflict(str(exc)) from exc
    except OperationalError as exc:
        if getattr(getattr(exc, "__cause__", None), "sqlstate", None) in RETRYABLE_SQLSTATES:
            raise Conflict(str(exc)) from exc
        raise


def _batch_process(project_id: int, partition: int, max_commands: int) -> BatchResult | None:
    with transaction.atomic():
        if not storage.partition_lock(project_id, partition):
            return None
        claimed = _claim(project_id, partition, max_commands)
        if not claimed:
            return BatchResult()
        now = clock.now()
        messages = [message for _, messages in claimed for message in messages]
        fresh = _fresh(project_id, messages)
        resolution = _read(project_id, fresh)
        for message in fresh:
            resolution.apply(message)

        result = BatchResult(
            commands=len(claimed),
            messages=len(messages),
            duplicates=len(messages) - len(fresh),
            suppressed=resolution.dropped,
            customers_merged=len(resolution.merges),
            customers_deleted=resolution.erasures,
        )
        result.customers_created = _insert_customers(project_id, resolution, now)
        _remove_customers(project_id, resolution)
        _insert_identities(project_id, resolution)
        _update_customers(resolution, now)
        result.events = _insert_events(project_id, resolution)
        events, trait_changes = resolution.stored()
        if events or trait_changes:
            # Inside the transaction: what receivers write (workflow triggers) commits with the batch.
            signals.batch_stored.send(
                sender=Resolution, project_id=project_id, events=events, trait_changes=trait_changes
            )
        for chunk in storage.ids_in([pk for pk, _ in claimed]):
            Command.objects.filter(pk__in=chunk).delete()
        changes, recheck_all = resolution.changes()
        transaction.on_commit(lambda: _announce_changes(project_id, changes, recheck_all))
    logger.info(
        "processed project=%s partition=%s commands=%s messages=%s events=%s duplicates=%s",
        project_id,
        partition,
        result.commands,
        result.messages,
        result.events,
        result.duplicates,
    )
    return result


# -- reading ---------------------------------------------------------------------------------------


def _claim(project_id: int, partition: int, max_commands: int) -> list[tuple[int, list[dict]]]:
    """The partition's oldest commands, up to MAX_MESSAGES_PER_BATCH calls (at least one command),
    as (row id, messages); each message carries its command's `received_at`.

    The cut is made in SQL, on the running total of message_count, so only the payloads taken are
    read and sent: reading max_commands rows and stopping at the cut in Python fetched more than
    twice the payloads it used when requests span all partitions (pieces of a dozen calls)."""
    table = Command._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, received_at, payload FROM {table} WHERE id IN ("  # noqa: S608 (a model's own table)
            "SELECT id FROM (SELECT id, message_count, SUM(message_count) OVER (ORDER BY id) AS upto "
            f"FROM (SELECT id, message_count FROM {table} WHERE project_id = %s AND partition = %s "
            "ORDER BY id LIMIT %s) AS oldest) AS totals WHERE upto <= %s OR upto = message_count"
            ") ORDER BY id",
            [project_id, partition, max_commands, MAX_MESSAGES_PER_BATCH],
        )
        rows = cursor.fetchall()
    claimed = []
    for pk, received_at, payload in rows:
        received_at = storage.aware(received_at)
        messages = orjson.loads(payload)
        for message in messages:
            message["received_at"] = received_at
        claimed.append((pk, messages))
    return claimed


def _looks_for_stored() -> bool:
    """Whether this batch looks up its message ids before writing (see MESSAGE_UNIQUE)."""
    if not storage.is_postgres():  # SQLite's insert ignores a repeat instead of failing
        return True
    return _duplicate_seen_at is not None and time.monotonic() - _duplicate_seen_at < DUPLICATE_LOOKUP_SECONDS


def _fresh(project_id: int, messages: list[dict]) -> list[dict]:
    """The calls not earlier in the batch, nor (when `_looks_for_stored`) stored before; a call
    stored before that is not looked up fails the batch's COPY instead."""
    seen = set()
    if _looks_for_stored():
        seen.update(
            message_id
            for (message_id,) in storage.select_in(
                "SELECT message_id FROM cdp_event WHERE project_id = %s AND message_id {values}",
                [project_id],
                {m["message_id"] for m in messages},
            )
        )
    fresh = []
    for message in messages:
        if message["message_id"] not in seen:
            seen.add(message["message_id"])
            fresh.append(message)
    return fresh


def _read(project_id: int, messages: list[dict]) -> Resolution:
    """What the calls name: suppressed ids, identities, and their customers, locked.

    The customers' rows are locked in id order before their content is read, so a batch of
    another partition touching one of them (a merge, an erasure, an update) waits for this one
    or this one for it, and each reads what the other committed. A customer that is gone by then
    was merged away or erased after its identity was read: Conflict, and the retry resolves the
    identity anew (to the primary, or to a suppressed id).
    """
    wanted: dict[str, set[str]] = {CUSTOMER_ID: set(), ANONYMOUS_ID: set()}
    with_traits: set[tuple[str, str]] = set()  # ids whose calls read or merge traits
    for message in messages:
        refs = references(message)
        for kind, value in refs:
            wanted[kind].add(value)
        if len(refs) > 1 or message["type"] in ("identify", "alias", "merge", "delete"):
            with_traits.update(refs)

    suppressed: set[tuple[str, str]] = set()
    bound: dict[tuple[str, str], int] = {}
    for kind, values in wanted.items():
        params = [project_id, kind]
        suppressed.update(
            (kind, value)
            for (value,) in storage.select_in(
                "SELECT value FROM cdp_suppression WHERE project_id = %s AND kind = %s AND value {values}",
                params,
                values,
            )
        )
        bound.update(
            ((kind, value), pk)
            for value, pk in storage.select_in(
                "SELECT value, customer_id FROM cdp_identity WHERE project_id = %s AND kind = %s AND value {values}",
                params,
                values,
            )
        )

    wanted_pks = set(bound.values())
    profiles = {
        pk: Profile(pk, external_id, stored_first=first, stored_last=last)
        for pk, external_id, first, last in storage.customers_lock(wanted_pks)
    }
    if len(profiles) < len(wanted_pks):
        raise Conflict(f"customers {sorted(wanted_pks - set(profiles))} were merged away or erased meanwhile")
    for row in storage.customers_load({pk for key, pk in bound.items() if key in with_traits}):
        _fill(profiles[row["pk"]], row)
    return Resolution(
        identities={key: profiles[pk] for key, pk in bound.items()},
        profiles=list(profiles.values()),
        suppressed=suppressed,
        load_traits=_load_traits,
    )


def _fill(profile: Profile, row: dict) -> None:
    profile.traits, profile.trait_times = row["traits"], row["trait_times"]
    profile.seen(row["first_seen_at"])
    profile.seen(row["last_seen_at"])


def _load_traits(pk: int) -> dict:
    """A locked customer's traits that the pre-scan of `_read` did not foresee a call needing."""
    (row,) = storage.customers_load([pk])
    return row


# -- writing ---------------------------------------------------------------------------------------


def _insert_customers(project_id: int, resolution: Resolution, now: datetime) -> int:
    """New customers, inserted whole; each profile learns its id."""
    creating = resolution.creating()
    if not creating:
        return 0
    created = Customer.objects.bulk_create(
        [
            Customer(
                project_id=project_id,
                external_id=p.external_id,
                traits=p.traits,
                trait_times=p.trait_times,
                email=_email(p.traits),
                name=_name(p.traits),
                first_seen_at=p.first_seen_at,
                last_seen_at=p.last_seen_at,
                created_at=now,
                updated_at=now,
            )
            for p in creating
        ]
    )
    for profile, row in zip(creating, created, strict=True):
        profile.pk = row.pk
    return len(creating)


def _remove_customers(project_id: int, resolution: Resolution) -> None:
    """Stored customers merged away (what they hold moves to the primary) or erased (what they
    hold goes, their ids are suppressed), after other apps were told (`customers_removing`)."""
    merged = resolution.merged_away()
    erased = resolution.erased_ids()
    if merged or erased:
        removing = [secondary.pk for secondary, _ in merged] + erased
        signals.customers_removing.send(sender=Resolution, project_id=project_id, customer_ids=removing, erased=erased)
    for secondary, primary in merged:
        Identity.objects.filter(customer_id=secondary.pk).update(customer_id=primary.pk)
        Event.objects.filter(project_id=project_id, customer_id=secondary.pk).update(customer_id=primary.pk)
        signals.customer_merged.send(
            sender=Resolution, project_id=project_id, secondary_id=secondary.pk, primary_id=primary.pk
        )
        Customer.objects.filter(pk=secondary.pk).delete()

    suppressions = set(resolution.new_suppressions)
    for chunk in storage.ids_in(erased):
        suppressions.update(Identity.objects.filter(customer_id__in=chunk).values_list("kind", "value"))
        Customer.objects.filter(project_id=project_id, pk__in=chunk).delete()
    Suppression.objects.bulk_create(
        [Suppression(project_id=project_id, kind=kind, value=value) for kind, value in suppressions],
        ignore_conflicts=True,  # an id erased twice (say, by two partitions) is suppressed once
    )


def _insert_identities(project_id: int, resolution: Resolution) -> None:
    # No ignore_conflicts: every id the calls name was read, so an identity already stored was
    # stored meanwhile by a batch of another partition. The IntegrityError is a Conflict: on the
    # retry this batch reads it and links to it instead of keeping a customer of its own.
    Identity.objects.bulk_create(
        [
            Identity(project_id=project_id, kind=kind, value=value, customer_id=profile.pk)
            for kind, value, profile in sorted(resolution.bindings(), key=lambda b: (b[0], b[1]))
        ]
    )


def _update_customers(resolution: Resolution, now: datetime) -> None:
    storage.customers_update(
        [
            (
                p.pk,
                p.external_id,
                None if p.traits is None else storage.dumps(p.traits),
                None if p.trait_times is None else storage.dumps(p.trait_times),
                None if p.traits is None else _email(p.traits),
                None if p.traits is None else _name(p.traits),
                p.first_seen_at,
                p.last_seen_at,
                now,
            )
            for p in resolution.updating()
        ]
    )


def _insert_events(project_id: int, resolution: Resolution) -> int:
    rows = [
        (
            project_id,
            profile.pk,
            message["type"],
            message["event"],
            storage.dumps(message["properties"]),
            storage.dumps(message["context"]),
            message["at"],
            message["received_at"],
            message["message_id"],
        )
        for profile, message in resolution.stored_events()
    ]
    storage.events_insert(rows)
    return len(rows)


def _email(traits: dict) -> str:
    value = traits.get("email")
    return str(value).strip().lower()[:320] if isinstance(value, (str, int, float)) else ""


def _name(traits: dict) -> str:
    value = traits.get("name")
    if not isinstance(value, str) or not value:
        parts = [traits.get("first_name") or traits.get("firstName"), traits.get("last_name") or traits.get("lastName")]
        value = " ".join(str(p) for p in parts if isinstance(p, str) and p)
    return value.strip()[:255]


def _announce_changes(project_id: int, changes: dict, recheck_all: set) -> None:
    """After the batch committed: a receiver that fails is logged, never the batch's failure
    (the batch is stored; re-applying its commands would count attempts against good data)."""
    for receiver, result in signals.customers_changed.send_robust(
        sender=Resolution, project_id=project_id, changes=changes, recheck_all=recheck_all
    ):
        if isinstance(result, Exception):
            logger.error(
                "project=%s: customers_changed receiver %s failed",
                project_id,
                getattr(receiver, "__qualname__", receiver),
                exc_info=result,
            )
