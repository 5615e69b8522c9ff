"""What one batch's calls make of the customers they name, in memory.

A `Resolution` starts from what the batch read (the identities its calls name, the customers they
resolve to, the ids suppressed) and applies the calls in order: identities resolved or linked as
Segment describes, traits merged (a trait set by a newer call is never overwritten by an older
one), profiles merged or erased. It touches no table: `cdp/batches.py` reads what it starts from
and writes what it ends with, inside the batch's transaction.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from .models import Identity

LAST_SEEN_RESOLUTION = 60.0  # seconds
CUSTOMER_ID = Identity.Kind.CUSTOMER_ID
ANONYMOUS_ID = Identity.Kind.ANONYMOUS_ID
_MISSING = object()
# An internal identify's increment, {"trait": dotted name, "by": number}, applied to the value the
# batch holds when it applies the call (`cdp.services.customer_trait_increment_enqueue`). Not a key
# `cdp.messages.normalize` makes, so an API call cannot carry one.
INCREMENT = "_increment"


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
    erased: bool = False
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

    def survives(self) -> bool:
        """Whether what this profile holds outlives the batch (in itself or in a primary)."""
        return not self.final().erased

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

    def set_traits(self, traits: dict, at_ms: int, record: list | None = None, *, newest_wins: bool = True) -> None:
        """Merge traits; a null removes one. A trait set by a newer call is not overwritten (unless
        not `newest_wins`: an increment counts from whatever is held, and leaves the newer time).
        `record` gets (name, old value, new value) of each trait that changed (None: not set)."""
        for name, value in traits.items():
            held_ms = self.trait_times.get(name, -1)
            if newest_wins and held_ms > at_ms:
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
            self.trait_times[name] = max(held_ms, at_ms)
            self.dirty = True


class Resolution:
    """The customers of one batch: bound by identity, changed by the batch's calls in order.

    `identities` maps each (kind, value) the batch knows to the profile it was bound to (follow
    `final()` for the one it resolves to now); `load_traits(pk)` reads a loaded profile's traits
    when a call needs them and the batch's pre-scan did not foresee it.
    """

    def __init__(
        self,
        *,
        identities: dict[tuple[str, str], Profile],
        profiles: list[Profile],
        suppressed: set[tuple[str, str]],
        load_traits: Callable[[int], dict],
    ):
        self.identities = identities
        self.loaded = profiles
        self.suppressed = suppressed
        self._load_traits = load_traits
        self.new_profiles: list[Profile] = []
        self.new_identities: list[tuple[str, str, Profile]] = []
        self.new_suppressions: set[tuple[str, str]] = set()
        self.merges: list[tuple[Profile, Profile]] = []
        self.erasures = 0
        self.dropped = 0  # calls about a suppressed id
        self.events: list[tuple[Profile, dict]] = []
        # (profile, message_id, [(trait, old, new), …]) of each identify that changed traits.
        self.trait_changes: list[tuple[Profile, str, list]] = []

    # -- identities ------------------------------------------------------------------------------

    def _full(self, profile: Profile) -> Profile:
        """Make sure a profile's traits are loaded."""
        if profile.traits is None:
            if profile.pk is None:
                profile.traits, profile.trait_times = {}, {}
            else:
                row = self._load_traits(profile.pk)
                profile.traits, profile.trait_times = row["traits"], row["trait_times"]
                profile.seen(row["first_seen_at"])
                profile.seen(row["last_seen_at"])
        return profile

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

    def erase(self, profile: Profile) -> None:
        """Right to erasure: forget the profile (and what was merged into it), refuse its ids."""
        profile = profile.final()
        for (kind, value), bound in list(self.identities.items()):
            if bound.final() is profile:
                self.suppressed.add((kind, value))
                self.new_suppressions.add((kind, value))
                del self.identities[(kind, value)]
        self.events = [(p, m) for p, m in self.events if p.final() is not profile]
        profile.erased = True
        self.erasures += 1

    # -- calls -----------------------------------------------------------------------------------

    def apply(self, message: dict) -> None:
        kind = message["type"]
        refs = references(message)
        if any(ref in self.suppressed for ref in refs):
            self.dropped += 1
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
            traits, increment = message["traits"], message.get(INCREMENT)
            self._full(profile)
            if increment is None:
                profile.set_traits(traits, int(at.timestamp() * 1000), changed)
            else:
                traits = incremented(profile.traits, increment["trait"], increment["by"])
                profile.set_traits(traits, int(at.timestamp() * 1000), changed, newest_wins=False)
            if changed:
                self.trait_changes.append((profile, message["message_id"], changed))
            properties = traits
        elif kind == "group":
            properties = {"group_id": message["group_id"], "traits": message["traits"]}
        elif kind in ("alias", "merge"):
            properties = {"previous": message["previous"]}
        if kind == "track":
            profile.event_names.add(message["event"])
        profile.seen(at)
        self.events.append((profile, {**message, "properties": properties, "at": at}))

    # -- what the batch ends with ----------------------------------------------------------------

    def creating(self) -> list[Profile]:
        """New profiles that outlive the batch as rows of their own."""
        return [p for p in self.new_profiles if p.merged_into is None and not p.erased]

    def merged_away(self) -> list[tuple[Profile, Profile]]:
        """(stored secondary, its final primary) of each merge whose primary survives."""
        return [(s, s.final()) for s, _ in self.merges if s.pk is not None and s.survives()]

    def erased_ids(self) -> list[int]:
        """Stored customers erased, with those merged into an erased profile in this batch."""
        return [p.pk for p in self.loaded if not p.survives()]

    def bindings(self) -> list[tuple[str, str, Profile]]:
        """New identities to store, each with the surviving profile it resolves to."""
        return [
            (kind, value, final)
            for kind, value, profile in self.new_identities
            if (kind, value) in self.identities and (final := profile.final()).survives()
        ]

    def updating(self) -> list[Profile]:
        """Stored profiles whose row must change. (Profiles created were inserted whole.)"""
        return [p for p in self.loaded if p.merged_into is None and not p.erased and p.needs_write()]

    def stored_events(self) -> list[tuple[Profile, dict]]:
        """Every call's event row, on the final profile (the erased' events were dropped)."""
        return [(profile.final(), message) for profile, message in self.events]

    def stored(self) -> tuple[list[tuple[int, dict]], list[tuple[int, str, list]]]:
        """What the batch stored, for `signals.batch_stored`: the track events as (customer id,
        message), and the trait changes as (customer id, message_id, [(trait, old, new), …]), of
        the customers that survive the batch."""
        events = [(p.final().pk, m) for p, m in self.events if m["type"] == "track"]
        traits = [(p.final().pk, message_id, changed) for p, message_id, changed in self.trait_changes if p.survives()]
        return events, traits

    def changes(self) -> tuple[dict[int, tuple[set, set]], set[int]]:
        """What changed per surviving customer, for segment updates: (trait names, event names)
        by customer id, and the ids of customers created or merged into, whose every segment must
        be re-checked (a new customer can match `is_not_set`; a merge brings another's events)."""
        changed: dict[int, tuple[set, set]] = {}
        recheck_all: set[int] = set()
        for profile in [*self.loaded, *self.new_profiles]:
            final = profile.final()
            if final.pk is None or final.erased:
                continue
            if profile.new or profile.merged_into is not None:
                recheck_all.add(final.pk)
            if not (profile.changed_traits or profile.event_names or profile.new or profile.merged_into):
                continue
            traits, events = changed.setdefault(final.pk, (set(), set()))
            traits |= profile.changed_traits
            events |= profile.event_names
        return changed, recheck_all


def incremented(traits: dict, trait: str, by: int | float) -> dict:
    """The identify traits that add `by` to a (dotted) trait of `traits`; a value that is missing or
    not a number counts as 0."""
    node = traits
    for part in trait.split("."):
        node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
    base = node if isinstance(node, (int, float)) and not isinstance(node, bool) else 0
    return trait_change(traits, trait, base + by)


def trait_change(traits: dict, trait: str, value, *, unset: bool = False) -> dict:
    """The identify traits that set (or unset) one (dotted) trait of `traits`. A dotted trait
    rewrites its top-level object with the one value changed (an identify merges top-level
    traits); a top-level one is set, or unset as a null."""
    path = trait.split(".")
    if len(path) == 1:
        return {trait: None if unset else value}
    top = traits.get(path[0])
    top = dict(top) if isinstance(top, dict) else {}
    node = top
    for part in path[1:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    if unset:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return {path[0]: top}


def references(message: dict) -> list[tuple[str, str]]:
    """The identities a call names: its own, and the previous one of an alias or merge."""
    refs = []
    if message.get("customer_id"):
        refs.append((CUSTOMER_ID, message["customer_id"]))
    if message.get("anonymous_id"):
        refs.append((ANONYMOUS_ID, message["anonymous_id"]))
    if message.get("previous"):
        refs.extend(message["previous"].items())
    return refs
