"""Validation and normalisation of ingest calls, native and Segment-style, into one message shape.

Every call accepted by the API (native `customer_id` fields, Segment/Customer.io `userId` fields,
Traitly, backfill files) becomes a plain dict with these keys before it is stored:

    type          identify | track | page | screen | group | alias | merge
    customer_id   str | None       (Segment's userId)
    anonymous_id  str | None
    event         str              (track: event name; page/screen: their name; else "")
    traits        dict | None      (identify, group: traits to merge; null values remove a trait)
    properties    dict
    context       dict
    timestamp     ISO 8601 str     (clock skew corrected from sentAt)
    message_id    str
    previous      {"customer_id"|"anonymous_id": str} | None   (alias, merge: the profile merged away)
    group_id      str | None

Hand-written rather than a serializer library: this runs for every event on the hot path, where a
DRF serializer costs ten times as much (see the ingest issue's measurements). Errors name the field
the way the API documents them: `customer_id: exceeds maximum length of 255 characters`.
"""

import os
import re
import uuid
from datetime import UTC, datetime, timedelta

import orjson

ID_MAX = 255
EVENT_MAX = 100
OBJECT_MAX_BYTES = 32 * 1024
OBJECT_MAX_KEYS = 100
OBJECT_MAX_DEPTH = 5
MESSAGE_ID_MAX = 255
# How far after its receipt a call may be dated (after the sentAt correction). Further on, it is
# dated at its receipt: a newer call's trait wins, so a call dated year 8999 would otherwise pin
# its traits against every later identify. Past dates stay as sent (backfills).
FUTURE_TOLERANCE = timedelta(minutes=5)

CUSTOMER_ID_RE = re.compile(r"[a-zA-Z0-9\-_.@+:]+")
EVENT_RE = re.compile(r"[a-zA-Z0-9_\- ]+")
ANONYMOUS_ID_RE = re.compile(r"[^\x00-\x1f\x7f]+")

TYPES = ("identify", "track", "page", "screen", "group", "alias", "merge")
# analytics.js's short paths and the types they stand for.
SHORT_TYPES = {"i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group", "a": "alias"}


class MessageError(ValueError):
    """A call that cannot be accepted; `str()` is the message the API returns."""


# The checks below run for every call on the hot path (a batch of 100 calls is 100 passes), so
# they are written for it: one pass per call, the pattern's bound `fullmatch` looked up once, and
# the field's name in an error (`batch[3].customer_id`) joined only when there is an error.


def _field(message: dict, *names: str):
    for name in names:
        if name in message:
            return message[name]
    return None


def _id(value, field: str, pattern: re.Pattern, allowed: str) -> str | None:
    return _checked_id(value, "", field, pattern.fullmatch, allowed)


def _checked_id(value, p: str, field: str, match, allowed: str) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise MessageError(f"{p}{field}: must be a string")
        value = str(value)
    if value == "":
        return None
    if len(value) > ID_MAX:
        raise MessageError(f"{p}{field}: exceeds maximum length of {ID_MAX} characters")
    if match(value) is None:
        raise MessageError(f"{p}{field}: contains characters outside {allowed}")
    return value


def _deeper_than(value, limit: int) -> bool:
    """Whether a JSON value nests deeper than `limit` levels (a flat object is 1, an empty one too).

    Iterative, so a value nested a thousand levels deep (orjson parses up to 1,024) costs no Python
    recursion. Only asked when the encoded value opens more objects and arrays than `limit`: with
    fewer, it cannot nest deeper (see _checked_object).
    """
    pending = [(value, 1)]
    while pending:
        current, level = pending.pop()
        if isinstance(current, dict):
            children = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if level > limit:
            return True
        pending.extend((child, level + 1) for child in children)
    return False


def _object(value, field: str, *, limit_keys: bool = True) -> dict | None:
    return _checked_object(value, "", field, limit_keys)


def _checked_object(value, p: str, field: str, limit_keys: bool = True) -> dict | None:
    """`value` if it is an object within the limits (keys, depth, size, no NUL), in that order."""
    if value is None:
        return None
    if type(value) is not dict and not isinstance(value, dict):
        raise MessageError(f"{p}{field}: must be an object")
    if not value:
        return value
    if limit_keys and len(value) > OBJECT_MAX_KEYS:
        raise MessageError(f"{p}{field}: exceeds {OBJECT_MAX_KEYS} keys")
    # Encoded once for the size and the NUL checks, and the depth read from the same bytes: a
    # value cannot nest deeper than the number of `{` and `[` it opens (strings may hold more of
    # them, which only sends it to the exact walk). orjson refuses more than 254 levels.
    try:
        dumped = orjson.dumps(value)
    except orjson.JSONEncodeError:
        if _deeper_than(value, OBJECT_MAX_DEPTH):
            raise MessageError(f"{p}{field}: exceeds maximum nesting depth of {OBJECT_MAX_DEPTH}") from None
        raise
    if dumped.count(b"{") + dumped.count(b"[") > OBJECT_MAX_DEPTH and _deeper_than(value, OBJECT_MAX_DEPTH):
        raise MessageError(f"{p}{field}: exceeds maximum nesting depth of {OBJECT_MAX_DEPTH}")
    if len(dumped) > OBJECT_MAX_BYTES:
        raise MessageError(f"{p}{field}: exceeds maximum size of 32 KB")
    if b"\\u0000" in dumped:  # PostgreSQL text and jsonb cannot hold NUL
        raise MessageError(f"{p}{field}: contains a NUL character")
    return value


def parse_timestamp(value, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MessageError(f"{field}: must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MessageError(f"{field}: must be an ISO 8601 date-time string, got {value[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not (1970 <= parsed.year <= 9000):
        raise MessageError(f"{field}: out of range")
    return parsed


def _event_name(value, p: str, field: str) -> str:
    if value is None or value == "":
        raise MessageError(f"{p}{field}: is required")
    if not isinstance(value, str):
        raise MessageError(f"{p}{field}: must be a string")
    if len(value) > EVENT_MAX:
        raise MessageError(f"{p}{field}: exceeds maximum length of {EVENT_MAX} characters")
    if _event_match(value) is None:
        raise MessageError(f"{p}{field}: contains characters outside a-zA-Z0-9 _ - and spaces")
    return value


def _page_name(value, p: str, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MessageError(f"{p}{field}: must be a string")
    if len(value) > ID_MAX:
        raise MessageError(f"{p}{field}: exceeds maximum length of {ID_MAX} characters")
    if "\x00" in value:
        raise MessageError(f"{p}{field}: contains a NUL character")
    return value


def _identity(value, field: str) -> dict:
    """A {customer_id|anonymous_id} reference, as in merge's primary and secondary."""
    if not isinstance(value, dict):
        raise MessageError(f"{field}: must be an object with customer_id or anonymous_id")
    customer_id = _id(_field(value, "customer_id", "userId", "id"), f"{field}.customer_id", CUSTOMER_ID_RE, _ID_CHARS)
    anonymous_id = _id(_field(value, "anonymous_id", "anonymousId"), f"{field}.anonymous_id", ANONYMOUS_ID_RE, _ANON)
    if customer_id:
        return {"customer_id": customer_id}
    if anonymous_id:
        return {"anonymous_id": anonymous_id}
    raise MessageError(f"{field}: customer_id or anonymous_id is required")


_ID_CHARS = "a-zA-Z0-9 - _ . @ + :"
_ANON = "printable characters"
_customer_id_match = CUSTOMER_ID_RE.fullmatch
_anonymous_id_match = ANONYMOUS_ID_RE.fullmatch
_event_match = EVENT_RE.fullmatch
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
_OWN = object()  # normalize's context: the call's own


def new_message_id() -> str:
    """A random (version 4) UUID as text, as str(uuid.uuid4()) makes it in a third of the time: a
    batch of calls without message ids needs one each."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def normalize(raw, *, received_at: datetime, default_type: str | None = None, prefix: str = "") -> dict:
    """Validate one call and return its normalised message, or raise MessageError.

    `prefix` is prepended to field names in errors (`batch[3].`). `default_type` is the type the
    endpoint implies; a body's own `type` must agree with it.
    """
    if not isinstance(raw, dict):
        raise MessageError(f"{prefix.rstrip('.') or 'body'}: must be a JSON object")
    return _normalize(raw, received_at, received_at.isoformat(), default_type, prefix)


def _normalize(
    raw: dict,
    received_at: datetime,
    received_iso: str,
    default_type: str | None,
    p: str,
    kind=None,
    sent_at=_OWN,
    context=_OWN,
    *,
    context_checked: bool = True,
) -> dict:
    """normalize() of a dict; a batch passes what the call inherits from the batch (its type
    spelled out, the batch's sentAt and context) instead of a copy of the call with them."""
    if kind is None:
        kind = raw.get("type") or default_type
    if default_type and kind != default_type:
        raise MessageError(f"{p}type: must be {default_type!r} on this endpoint")
    if kind not in TYPES:
        raise MessageError(f"{p}type: must be one of {', '.join(TYPES)}")

    customer_id = _checked_id(
        raw["customer_id"] if "customer_id" in raw else raw["userId"] if "userId" in raw else raw.get("user_id"),
        p, "customer_id", _customer_id_match, _ID_CHARS,
    )  # fmt: skip
    anonymous_id = _checked_id(
        raw["anonymous_id"] if "anonymous_id" in raw else raw.get("anonymousId"),
        p, "anonymous_id", _anonymous_id_match, _ANON,
    )  # fmt: skip

    if context is _OWN:
        context = _checked_object(raw.get("context"), p, "context", False) or {}
    elif not context_checked:
        context = _checked_object(context, p, "context", False)
    integrations = raw.get("integrations")
    if integrations is not None and not isinstance(integrations, dict):
        raise MessageError(f"{p}integrations: must be an object")

    timestamp = raw.get("timestamp")
    if sent_at is _OWN:
        sent_at = raw["sentAt"] if "sentAt" in raw else raw.get("sent_at")
    if timestamp is None or timestamp == "":
        if sent_at is not None and sent_at != "":
            parse_timestamp(sent_at, f"{p}sentAt")  # checked, though there is nothing to correct
        timestamp_iso = received_iso
    else:
        timestamp = parse_timestamp(timestamp, f"{p}timestamp")
        sent_at = parse_timestamp(sent_at, f"{p}sentAt")
        # Segment's clock-skew correction: the device clock is off by (sentAt - receivedAt), and the
        # event's timestamp came from the same clock.
        if sent_at is not None:
            try:
                timestamp = timestamp + (received_at - sent_at)
            except OverflowError:  # sentAt thousands of years after timestamp: before year 1
                raise MessageError(f"{p}sentAt: out of range") from None
        if timestamp > received_at + FUTURE_TOLERANCE:
            context = {**context, "original_timestamp": raw.get("timestamp")}
            timestamp_iso = received_iso
        else:
            timestamp_iso = timestamp.isoformat()

    message_id = raw["message_id"] if "message_id" in raw else raw.get("messageId")
    if message_id is not None:
        if type(message_id) is not str:
            if not isinstance(message_id, (str, int)) or isinstance(message_id, bool):
                raise MessageError(f"{p}message_id: must be a string")
            message_id = str(message_id)
        if "\x00" in message_id:
            raise MessageError(f"{p}message_id: contains a NUL character")
        if len(message_id) > MESSAGE_ID_MAX:
            raise MessageError(f"{p}message_id: exceeds maximum length of {MESSAGE_ID_MAX} characters")
    message = {
        "type": kind,
        "customer_id": customer_id,
        "anonymous_id": anonymous_id,
        "event": "",
        "traits": None,
        "properties": {},
        "context": context,
        "timestamp": timestamp_iso,
        "message_id": message_id or new_message_id(),
        "previous": None,
        "group_id": None,
    }

    if kind == "track":  # the most common call first
        if not customer_id and not anonymous_id:
            raise MessageError(f"{p}customer_id: customer_id or anonymous_id is required")
        message["event"] = _event_name(raw.get("event"), p, "event")
        message["properties"] = _checked_object(raw.get("properties"), p, "properties") or {}
        return message
    if kind == "merge":
        primary = _identity(raw.get("primary"), f"{p}primary")
        secondary = _identity(raw.get("secondary"), f"{p}secondary")
        if primary == secondary:
            raise MessageError(f"{p}secondary: must differ from primary")
        message.update(
            customer_id=primary.get("customer_id"), anonymous_id=primary.get("anonymous_id"), previous=secondary
        )
        return message
    if kind == "alias":
        previous = _checked_id(
            raw["previous_id"] if "previous_id" in raw else raw.get("previousId"),
            p, "previous_id", _customer_id_match, _ID_CHARS,
        )  # fmt: skip
        if not previous:
            raise MessageError(f"{p}previous_id: is required")
        if not customer_id:
            raise MessageError(f"{p}customer_id: is required")
        message["previous"] = {"customer_id": previous}
        message["anonymous_id"] = None
        return message

    if not customer_id and not anonymous_id:
        raise MessageError(f"{p}customer_id: customer_id or anonymous_id is required")

    if kind == "identify":
        traits = _checked_object(raw.get("traits"), p, "traits")
        if traits is None:
            # rudder-sdk-python and some Segment libraries send identify traits in context.traits.
            traits = _checked_object(context.get("traits"), p, "context.traits")
        message["traits"] = traits or {}
    elif kind in ("page", "screen"):
        properties = _checked_object(raw.get("properties"), p, "properties") or {}
        message["event"] = _page_name(raw.get("name", properties.get("name")), p, "name")
        message["properties"] = properties
    elif kind == "group":
        group_id = _checked_id(
            raw["group_id"] if "group_id" in raw else raw.get("groupId"), p, "group_id", _anonymous_id_match, _ANON
        )
        if not group_id:
            raise MessageError(f"{p}group_id: is required")
        message["group_id"] = group_id
        message["traits"] = _checked_object(raw.get("traits"), p, "traits") or {}
    return message


def normalize_batch(raw, *, received_at: datetime, max_items: int) -> list[dict]:
    if not isinstance(raw, dict):
        raise MessageError("body: must be a JSON object with a batch array")
    items = raw.get("batch")
    if not isinstance(items, list):
        raise MessageError("batch: must be an array of calls")
    if not items:
        raise MessageError("batch: must contain at least one call")
    if len(items) > max_items:
        raise MessageError(f"batch: exceeds {max_items} calls")
    shared_context = raw.get("context")
    if not (isinstance(shared_context, dict) and shared_context):
        shared_context = None
    shared_checked = False  # the batch's context is checked once, by the first call that takes it
    sent_at = _field(raw, "sentAt", "sent_at")
    received_iso = received_at.isoformat()
    messages = []
    append = messages.append
    for index, item in enumerate(items):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind is None or kind == "":
            raise MessageError(f"batch[{index}].type: is required")
        if isinstance(kind, str):
            kind = SHORT_TYPES.get(kind, kind)
        inherited_sent_at = _OWN if "sentAt" in item or "sent_at" in item else sent_at
        if shared_context is None or "context" in item:
            append(_normalize(item, received_at, received_iso, None, f"batch[{index}].", kind, inherited_sent_at))
        else:
            append(
                _normalize(
                    item, received_at, received_iso, None, f"batch[{index}].", kind, inherited_sent_at, shared_context,
                    context_checked=shared_checked,
                )
            )  # fmt: skip
            shared_checked = True
    return messages


def erasure_message(customer_id: str, *, at: datetime) -> dict:
    """The message of a right-to-erasure request (DELETE /v1/customers/{id}): it is queued like
    every call, behind the ones accepted before it."""
    return {
        "type": "delete",
        "customer_id": customer_id,
        "anonymous_id": None,
        "event": "",
        "traits": None,
        "properties": {},
        "context": {},
        "timestamp": at.isoformat(),
        "message_id": str(uuid.uuid4()),
        "previous": None,
        "group_id": None,
    }
