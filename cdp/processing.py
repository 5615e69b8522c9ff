"""The command processor: applies accepted calls to customers, identities and events, in batches.

One call of `commands_process` claims the oldest commands of one project, applies all their
messages in memory (identity resolution, trait merges, merges of profiles), writes the result with
bulk SQL and deletes the commands, all in one transaction. A worker that dies half-way rolls the
transaction back and the commands stay in the inbox for the next run: nothing is lost, nothing is
applied twice. Per-project serialisation (an advisory lock) keeps the calls of a project in order.

Idempotency: every message has a message_id (the client's, or one drawn at the API), stored on its
event row under a unique constraint; a message whose id is already stored is skipped whole.
"""

import gc
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from django.db import InterfaceError, OperationalError, transaction

from timonier import clock

from . import signals, storage
from .models import Command, Customer, Event, FailedCommand, Identity, Suppression

logger = logging.getLogger(__name__)

MAX_MESSAGES_PER_BATCH = 5000
MAX_COMMANDS_PER_BATCH = 1000
LAST_SEEN_RESOLUTION = 60.0  # seconds
MAX_ATTEMPTS = 3  # a command failing this often alone is set aside (FailedCommand)
CUSTOMER_ID = Identity.Kind.CUSTOMER_ID
ANONYMOUS_ID = Identity.Kind.ANONYMOUS_ID


@dataclass(eq=False)
class Profile:
    """A customer as the batch sees it: loaded from the database or new, possibly merged away.

    `traits` and `trait_times` are None until needed: a batch of track calls never reads them.
    `first_seen_at`/`last_seen_at` are what this batch saw; the update keeps the database's
    earlier/later value (LEAST/GREATEST), so they need not be read either.
    """

    pk: int | None
    external_id: str | None
    traits: dict | None = None
    trait_times: dict | None = None
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None
    new: bool = False
    dirty: bool = False
    merged_into: "Profile | None" = None
    changed_traits: set = field(default_factory=set)
    event_names: set = field(default_factory=set)
    # What the database holds (epoch seconds), to tell whether the seen-times moved enough to write.
    stored_first: float | None = None
    stored_last: float | None = None

    def __post_init__(self):
        if self.stored_first is None and self.first_seen_at is not None:
            self.stored_first = self.first_seen_at.timestamp()
        if self.stored_last is None and self.last_seen_at is not None:
            self.stored_last = self.last_seen_at.timestamp()

    def final(self) -> "Profile":
        profile = self
        while profile.merged_into is not None:
            profile = profile.merged_into
        return profile

    def seen(self, at: datetime | None) -> None:
        if at is None:
            return
        if self.first_seen_at is None or at < self.first_seen_at:
            self.first_seen_at = at
        if self.last_seen_at is None or at > self.last_seen_at:
            self.last_seen_at = at

    def needs_write(self) -> bool:
        """Whether the row must be updated: content changed, or the seen-times moved.

        `last_seen_at` is kept to LAST_SEEN_RESOLUTION: a customer sending a stream of events is
        written once a minute, not once per batch (the update is most of a batch's cost).
        """
        if self.dirty or self.new:
            return True
        if self.first_seen_at is not None and (
            self.stored_first is None or self.first_seen_at.timestamp() < self.stored_first
        ):
            return True
        return self.last_seen_at is not None and (
            self.stored_last is None or self.last_seen_at.timestamp() >= self.stored_last + LAST_SEEN_RESOLUTION
        )

    def set_traits(self, traits: dict, at_ms: int, record: list | None = None) -> None:
        """Merge traits; a null removes one. A trait set by a newer call is not overwritten.
        `record` gets (name, old value, new value) of each trait that changed (None: not set)."""
        for name, value in traits.items():
            if self.trait_times.get(name, -1) > at_ms:
                continue
            old = self.traits.get(name)
            if value is None:
                if name in self.traits:
                    del self.traits[name]
                    self.changed_traits.add(name)
                    if record is not None:
                        record.append((name, old, None))
            elif self.traits.get(name, _MISSING) != value:
                self.traits[name] = value
                self.changed_traits.add(name)
                if record is not None:
                    record.append((name, old, value))
            self.trait_times[name] = at_ms
            self.dirty = True


_MISSING = object()


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


class Batch:
    """The in-memory state of one batch of one project."""

    def __init__(self, project_id: int, now: datetime):
        self.project_id = project_id
        self.now = now
        self.identities: dict[tuple[str, str], Profile] = {}
        self.new_identities: list[tuple[str, str, Profile]] = []
        self.profiles_by_pk: dict[int, Profile] = {}
        self.new_profiles: list[Profile] = []
        self.merges: list[tuple[Profile, Profile]] = []
        self.deletions: list[Profile] = []
        self.events: list[tuple[Profile, dict]] = []
        # (profile, message_id, [(trait, old, new), …]) of each identify that changed traits.
        self.trait_changes: list[tuple[Profile, str, list]] = []
        self.suppressed: set[tuple[str, str]] = set()
        self.new_suppressions: set[tuple[str, str]] = set()
        self.result = BatchResult()

    # -- loading ---------------------------------------------------------------------------------

    def load(self, messages: list[dict]) -> None:
        wanted: dict[str, set[str]] = {CUSTOMER_ID: set(), ANONYMOUS_ID: set()}
        with_traits: set[tuple[str, str]] = set()  # ids whose calls read or merge traits
        for message in messages:
            refs = _references(message)
            for kind, value in refs:
                wanted[kind].add(value)
            if len(refs) > 1 or message["type"] in ("identify", "alias", "merge", "delete"):
                with_traits.update(refs)
        for kind, values in wanted.items():
            params = [self.project_id, kind]
            for (value,) in storage.select_in(
                "SELECT value FROM cdp_suppression WHERE project_id = %s AND kind = %s AND value {values}",
                params,
                values,
            ):
                self.suppressed.add((kind, value))
            found = storage.select_in(
                "SELECT value, customer_id FROM cdp_identity WHERE project_id = %s AND kind = %s AND value {values}",
                params,
                values,
            )
            missing = {pk for _, pk in found if pk not in self.profiles_by_pk}
            full = {pk for value, pk in found if pk in missing and (kind, value) in with_traits}
            for row in storage.customers_load(full):
                self.profiles_by_pk[row["pk"]] = Profile(**row)
            for pk, external_id, stored_first, stored_last in storage.customers_load_light(missing - full):
                self.profiles_by_pk[pk] = Profile(pk, external_id, stored_first=stored_first, stored_last=stored_last)
            for value, pk in found:
                self.identities[(kind, value)] = self.profiles_by_pk[pk]

    def _full(self, profile: Profile) -> Profile:
        """Make sure a profile's traits are loaded (a lookup the pre-scan of `load` did not foresee)."""
        if profile.traits is None:
            if profile.pk is None:
                profile.traits, profile.trait_times = {}, {}
            else:
                (row,) = storage.customers_load([profile.pk])
                profile.traits, profile.trait_times = row["traits"], row["trait_times"]
                profile.seen(row["first_seen_at"])
                profile.seen(row["last_seen_at"])
        return profile

    # -- resolution ------------------------------------------------------------------------------

    def _new_profile(self, at: datetime, external_id: str | None) -> Profile:
        profile = Profile(None, external_id, {}, {}, at, at, new=True, dirty=True)
        self.new_profiles.append(profile)
        if external_id:
            self._bind(CUSTOMER_ID, external_id, profile)
        return profile

    def _bind(self, kind: str, value: str, profile: Profile) -> None:
        self.identities[(kind, value)] = profile
        self.new_identities.append((kind, value, profile))

    def _lookup(self, kind: str, value: str | None) -> Profile | None:
        if not value:
            return None
        profile = self.identities.get((kind, value))
        return profile.final() if profile is not None else None

    def resolve(self, customer_id: str | None, anonymous_id: str | None, at: datetime) -> Profile:
        """The profile a call is about, creating or linking identities as Segment describes."""
        known = self._lookup(CUSTOMER_ID, customer_id)
        anonymous = self._lookup(ANONYMOUS_ID, anonymous_id)
        if customer_id and anonymous_id:
            if known and anonymous and known is not anonymous:
                if anonymous.external_id is None:  # anonymous activity now belongs to the customer
                    self.merge(anonymous, into=known)
                return known
            if known:
                if anonymous is None:
                    self._bind(ANONYMOUS_ID, anonymous_id, known)
                return known
            if anonymous and anonymous.external_id is None:
                anonymous.external_id, anonymous.dirty = customer_id, True
                self._bind(CUSTOMER_ID, customer_id, anonymous)
                return anonymous
            profile = self._new_profile(at, customer_id)
            if anonymous is None:
                self._bind(ANONYMOUS_ID, anonymous_id, profile)
            return profile
        if customer_id:
            return known or self._new_profile(at, customer_id)
        if anonymous:
            return anonymous
        profile = self._new_profile(at, None)
        self._bind(ANONYMOUS_ID, anonymous_id, profile)
        return profile

    def merge(self, secondary: Profile, *, into: Profile) -> None:
        """Fold a profile into another: identities, traits (newest wins) and events move."""
        secondary, primary = secondary.final(), into.final()
        if secondary is primary:
            return
        self._full(secondary)
        self._full(primary)
        for name, value in secondary.traits.items():
            primary.set_traits({name: value}, secondary.trait_times.get(name, 0))
        primary.seen(secondary.first_seen_at)
        primary.seen(secondary.last_seen_at)
        if primary.external_id is None and secondary.external_id is not None:
            primary.external_id, primary.dirty = secondary.external_id, True
        secondary.merged_into = primary
        primary.dirty = True
        self.merges.append((secondary, primary))
        self.result.customers_merged += 1

    # -- applying --------------------------------------------------------------------------------

    def apply(self, message: dict) -> None:
        kind = message["type"]
        refs = _references(message)
        if any(ref in self.suppressed for ref in refs):
            self.result.suppressed += 1
            return
        at = datetime.fromisoformat(message["timestamp"])
        if kind == "delete":
            profile = self._lookup(*refs[0])
            self.new_suppressions.add(refs[0])
            self.suppressed.add(refs[0])
            if profile is not None:
                self.erase(profile)
            return
        profile = self.resolve(message["customer_id"], message["anonymous_id"], at)
        if kind in ("alias", "merge") and message["previous"]:
            ((prev_kind, prev_value),) = message["previous"].items()
            previous = self._lookup(prev_kind, prev_value)
            if previous is None:
                self._bind(prev_kind, prev_value, profile)
            else:
                self.merge(previous, into=profile)
        properties = message["properties"]
        if kind == "identify":
            changed: list = []
            self._full(profile).set_traits(message["traits"], int(at.timestamp() * 1000), changed)
            if changed:
                self.trait_changes.append((profile, message["message_id"], changed))
            properties = message["traits"]
        elif kind == "group":
            properties = {"group_id": message["group_id"], "traits": message["traits"]}
        elif kind in ("alias", "merge"):
            properties = {"previous": message["previous"]}
        if kind == "track":
            profile.event_names.add(message["event"])
        profile.seen(at)
        self.events.append((profile, {**message, "properties": properties, "at": at}))

    def erase(self, profile: Profile) -> None:
        """Right to erasure: forget the profile and refuse its ids from now on."""
        profile = profile.final()
        for (kind, value), bound in list(self.identities.items()):
            if bound.final() is profile:
                self.suppressed.add((kind, value))
                self.new_suppressions.add((kind, value))
                del self.identities[(kind, value)]
        self.events = [(p, m) for p, m in self.events if p.final() is not profile]
        self.deletions.append(profile)
        self.result.customers_deleted += 1

    # -- writing ---------------------------------------------------------------------------------

    def flush(self, received_at: dict[str, datetime]) -> None:
        now = self.now
        deleted = {id(p) for p in self.deletions}
        creating = [p for p in self.new_profiles if p.merged_into is None and id(p) not in deleted]
        if creating:
            created = Customer.objects.bulk_create(
                [
                    Customer(
                        project_id=self.project_id,
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
            self.result.customers_created += len(creating)

        erased = [p.pk for p in self.deletions if p.pk is not None]
        removing = [s.pk for s, _ in self.merges if s.pk is not None and id(s.final()) not in deleted] + erased
        if removing:
            signals.customers_removing.send(
                sender=Batch, project_id=self.project_id, customer_ids=removing, erased=erased
            )

        # Merges: move what the database holds of each persisted secondary to its final primary.
        for secondary, _ in self.merges:
            if secondary.pk is None:
                continue
            target = secondary.final()
            if id(target) in deleted:
                continue
            Identity.objects.filter(customer_id=secondary.pk).update(customer_id=target.pk)
            Event.objects.filter(project_id=self.project_id, customer_id=secondary.pk).update(customer_id=target.pk)
            signals.customer_merged.send(
                sender=Batch, project_id=self.project_id, secondary_id=secondary.pk, primary_id=target.pk
            )
            Customer.objects.filter(pk=secondary.pk).delete()

        for chunk in storage.ids_in(erased):
            self.new_suppressions.update(Identity.objects.filter(customer_id__in=chunk).values_list("kind", "value"))
            Customer.objects.filter(project_id=self.project_id, pk__in=chunk).delete()
        Suppression.objects.bulk_create(
            [Suppression(project_id=self.project_id, kind=k, value=v) for k, v in self.new_suppressions],
            ignore_conflicts=True,
        )

        identities = [
            Identity(project_id=self.project_id, kind=kind, value=value, customer_id=profile.final().pk)
            for kind, value, profile in self.new_identities
            if (kind, value) in self.identities and id(profile.final()) not in deleted
        ]
        Identity.objects.bulk_create(identities, ignore_conflicts=True)
        # Profiles created above were inserted whole; only loaded ones may need an update.
        updates = [
            p
            for p in self.profiles_by_pk.values()
            if p.merged_into is None and id(p) not in deleted and p.needs_write()
        ]
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
                for p in updates
            ]
        )

        rows = []
        for profile, message in self.events:
            final = profile.final()
            if id(final) in deleted:
                continue
            rows.append(
                (
                    self.project_id,
                    final.pk,
                    message["type"],
                    message["event"],
                    storage.dumps(message["properties"]),
                    storage.dumps(message["context"]),
                    message["at"],
                    received_at.get(message["message_id"], now),
                    message["message_id"],
                )
            )
        storage.events_insert(rows)
        self.result.events += len(rows)

    def stored(self) -> tuple[list[tuple[int, dict]], list[tuple[int, str, list]]]:
        """What the batch stored, for `signals.batch_stored`: the track events as (customer id,
        message), and the trait changes as (customer id, message_id, [(trait, old, new), …]), of
        the customers that survive the batch."""
        deleted = {id(p) for p in self.deletions}
        events = [
            (final.pk, message)
            for profile, message in self.events
            if message["type"] == "track" and id(final := profile.final()) not in deleted
        ]
        traits = [
            (final.pk, message_id, changed)
            for profile, message_id, changed in self.trait_changes
            if id(final := profile.final()) not in deleted
        ]
        return events, traits

    def changes(self) -> tuple[dict[int, tuple[set, set]], set[int]]:
        """What changed per surviving customer, for segment updates: (trait names, event names)
        by customer id, and the ids of customers created or merged into, whose every segment must
        be re-checked (a new customer can match `is_not_set`; a merge brings another's events)."""
        changed: dict[int, tuple[set, set]] = {}
        recheck_all: set[int] = set()
        deleted = {id(p) for p in self.deletions}
        for profile in [*self.profiles_by_pk.values(), *self.new_profiles]:
            final = profile.final()
            if final.pk is None or id(final) in deleted:
                continue
            if profile.new or profile.merged_into is not None:
                recheck_all.add(final.pk)
            if not (profile.changed_traits or profile.event_names or profile.new or profile.merged_into):
                continue
            traits, events = changed.setdefault(final.pk, (set(), set()))
            traits |= profile.changed_traits
            events |= profile.event_names
        return changed, recheck_all


def _references(message: dict) -> list[tuple[str, str]]:
    refs = []
    if message.get("customer_id"):
        refs.append((CUSTOMER_ID, message["customer_id"]))
    if message.get("anonymous_id"):
        refs.append((ANONYMOUS_ID, message["anonymous_id"]))
    if message.get("previous"):
        refs.extend(message["previous"].items())
    return refs


def _email(traits: dict) -> str:
    value = traits.get("email")
    return str(value).strip().lower()[:320] if isinstance(value, (str, int, float)) else ""


def _name(traits: dict) -> str:
    value = traits.get("name")
    if not isinstance(value, str) or not value:
        parts = [traits.get("first_name") or traits.get("firstName"), traits.get("last_name") or traits.get("lastName")]
        value = " ".join(str(p) for p in parts if isinstance(p, str) and p)
    return value.strip()[:255]


def _existing_message_ids(project_id: int, message_ids: Iterable[str]) -> set[str]:
    rows = storage.select_in(
        "SELECT message_id FROM cdp_event WHERE project_id = %s AND message_id {values}", [project_id], set(message_ids)
    )
    return {message_id for (message_id,) in rows}


def commands_process(*, project_id: int) -> BatchResult | None:
    """Apply the oldest pending commands of a project in one transaction.

    Returns None when another worker is processing this project, else what was done (an empty
    result when the inbox is empty).
    """
    # A batch allocates tens of thousands of small objects that all die together at its end;
    # the cyclic collector would scan them repeatedly meanwhile for nothing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            return _commands_process(project_id, MAX_COMMANDS_PER_BATCH)
        except (OperationalError, InterfaceError):
            raise  # the database is unreachable: nothing to learn, the task is retried
        except Exception:
            logger.exception("batch failed project=%s; applying its commands one by one", project_id)
            return _process_oldest_alone(project_id)
    finally:
        if gc_was_enabled:
            gc.enable()


def _process_oldest_alone(project_id: int) -> BatchResult | None:
    """Apply the oldest command by itself; after MAX_ATTEMPTS failures, set it aside."""
    try:
        return _commands_process(project_id, 1)
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        with transaction.atomic():
            command = Command.objects.select_for_update().filter(project_id=project_id).order_by("id").first()
            if command is not None:
                command.attempts += 1
                if command.attempts < MAX_ATTEMPTS:
                    command.save(update_fields=["attempts"])
                else:
                    FailedCommand.objects.create(
                        project_id=project_id,
                        command_id=command.command_id,
                        received_at=command.received_at,
                        message_count=command.message_count,
                        payload=command.payload,
                        error=f"{type(exc).__name__}: {exc}"[:10_000],
                    )
                    command.delete()
        if command is None or command.attempts < MAX_ATTEMPTS:
            raise  # counted (outside the block above, so the count is kept); tried again later
        logger.error("command %s set aside after %s attempts: %s", command.command_id, MAX_ATTEMPTS, exc)
        return BatchResult(commands=1, messages=command.message_count)


def _commands_process(project_id: int, max_commands: int) -> BatchResult | None:
    with transaction.atomic():
        if not storage.project_lock(project_id):
            return None
        claimed = []
        total = 0
        for row in (
            Command.objects.filter(project_id=project_id)
            .order_by("id")
            .values_list("id", "command_id", "received_at", "message_count", "payload")[:max_commands]
        ):
            if claimed and total + row[3] > MAX_MESSAGES_PER_BATCH:
                break
            claimed.append(row)
            total += row[3]
        if not claimed:
            return BatchResult()

        batch = Batch(project_id, clock.now())
        messages: list[dict] = []
        received_at: dict[str, datetime] = {}
        for _, _, received, _, payload in claimed:
            for message in orjson.loads(payload):
                messages.append(message)
                received_at[message["message_id"]] = received
        batch.result.commands = len(claimed)
        batch.result.messages = len(messages)

        seen = _existing_message_ids(project_id, (m["message_id"] for m in messages))
        fresh = []
        for message in messages:
            if message["message_id"] in seen:
                batch.result.duplicates += 1
                continue
            seen.add(message["message_id"])
            fresh.append(message)

        batch.load(fresh)
        for message in fresh:
            batch.apply(message)
        batch.flush(received_at)
        events, trait_changes = batch.stored()
        if events or trait_changes:
            # Inside the transaction: what receivers write (workflow triggers) commits with the batch.
            signals.batch_stored.send(
                sender=Batch, project_id=project_id, events=events, trait_changes=trait_changes
            )
        for chunk in storage.ids_in([c[0] for c in claimed]):
            Command.objects.filter(pk__in=chunk).delete()
        changes, recheck_all = batch.changes()
        transaction.on_commit(lambda: _announce_changes(project_id, changes, recheck_all))
    logger.info(
        "processed project=%s commands=%s messages=%s events=%s duplicates=%s",
        project_id,
        batch.result.commands,
        batch.result.messages,
        batch.result.events,
        batch.result.duplicates,
    )
    return batch.result


def _announce_changes(project_id: int, changes: dict, recheck_all: set) -> None:
    """After the batch committed: a receiver that fails is logged, never the batch's failure
    (the batch is stored; re-applying its commands would count attempts against good data)."""
    for receiver, result in signals.customers_changed.send_robust(
        sender=Batch, project_id=project_id, changes=changes, recheck_all=recheck_all
    ):
        if isinstance(result, Exception):
            logger.error(
                "project=%s: customers_changed receiver %s failed",
                project_id,
                getattr(receiver, "__qualname__", receiver),
                exc_info=result,
            )


def projects_with_pending_commands() -> list[int]:
    return list(Command.objects.values_list("project_id", flat=True).distinct())


def pending_count(project_id: int | None = None) -> int:
    query = Command.objects.all() if project_id is None else Command.objects.filter(project_id=project_id)
    return query.count()
