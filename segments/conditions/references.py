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
