"""What a condition depends on, so membership can be re-evaluated only when that changes."""


def _walk(node):
    if not isinstance(node, dict):
        return
    yield node
    if node.get("type") in ("and", "or") and isinstance(node.get("conditions"), list):
        for child in node["conditions"]:
            yield from _walk(child)
    elif node.get("type") == "not":
        yield from _walk(node.get("condition"))


def referenced_traits(condition) -> set[str]:
    """The dotted trait names the condition reads."""
    return {
        node["name"] for node in _walk(condition) if node.get("type") == "trait" and isinstance(node.get("name"), str)
    }


def referenced_events(condition) -> set[str]:
    """The event names the condition counts."""
    return {
        node["event_name"]
        for node in _walk(condition)
        if node.get("type") == "event" and isinstance(node.get("event_name"), str)
    }


def change_reader(condition):
    """A test `(changed trait names, tracked event names) -> bool` of whether such a change can
    alter the condition's answer: it reads one of the events, or one of the traits, where setting
    `address` changes `address.city` and setting `address.city` changes `address`."""
    read = referenced_traits(condition)
    events = referenced_events(condition)
    prefixes = {".".join(name.split(".")[:i]) for name in read for i in range(1, name.count(".") + 2)}

    def reads_trait(changed: str) -> bool:
        if changed in prefixes:
            return True
        steps = changed.split(".")
        return any(".".join(steps[:i]) in read for i in range(1, len(steps)))

    def reads(traits, tracked) -> bool:
        return not events.isdisjoint(tracked) or any(map(reads_trait, traits))

    return reads


def uses_relative_window(condition) -> bool:
    """Whether the result can change with time alone (a `within` window relative to now)."""
    return any(node.get("type") == "event" and "within" in node for node in _walk(condition))


def referenced_segments(condition) -> set[int]:
    """The ids of the segments whose membership the condition reads."""
    return {
        node["segment_id"]
        for node in _walk(condition)
        if node.get("type") == "segment" and isinstance(node.get("segment_id"), int)
    }


# Count rules that stay true when more events are counted (no `count` means "at least one").
_GROWING_COUNTS = {("greater_than_or_equals",), ("greater_than",)}


def holds_as_events_grow(condition) -> bool:
    """Whether a customer who matches keeps matching when events are added to their history (and
    nothing else changes): every event condition is reached through no `not` and asks for
    "at least" a number of events. Such a segment cannot lose a member to an ingested event, so
    a batch that only tracked events re-checks only the customers who are not members yet."""
    return _grows(condition, positive=True)


def _grows(node, *, positive: bool) -> bool:
    if not isinstance(node, dict):
        return False
    kind = node.get("type")
    if kind in ("and", "or"):
        return all(_grows(child, positive=positive) for child in node.get("conditions", []))
    if kind == "not":
        return _grows(node.get("condition"), positive=not positive)
    if kind == "event":
        rule = node.get("count")
        return positive and (rule is None or (rule.get("op"),) in _GROWING_COUNTS)
    return kind in ("trait", "segment")  # events do not change them (segments follow their own)
