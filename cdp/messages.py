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


def _field(message: dict, *names: str):
    for name in names:
        if name in message:
            return message[name]
    return None


def _id(value, field: str, pattern: re.Pattern, allowed: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MessageError(f"{field}: must be a string")
    value = str(value)
    if value == "":
        return None
    if len(value) > ID_MAX:
        raise MessageError(f"{field}: exceeds maximum length of {ID_MAX} characters")
    if not pattern.fullmatch(value):
        raise MessageError(f"{field}: contains characters outside {allowed}")
    return value


def _deeper_than(value, limit: int) -> bool:
    """Whether a JSON value nests deeper than `limit` levels (a flat object is 1, an empty one too).

    Iterative, so a value nested a thousand levels deep (orjson parses up to 1,024) costs no Python
    recursion; and checked before `orjson.dumps`, which refuses more than 254 levels with an error.
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
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MessageError(f"{field}: must be an object")
    if not value:
        return value
    if limit_keys and len(value) > OBJECT_MAX_KEYS:
        raise MessageError(f"{field}: exceeds {OBJECT_MAX_KEYS} keys")
    if _deeper_than(value, OBJECT_MAX_DEPTH):
        raise MessageError(f"{field}: exceeds maximum nesting depth of {OBJECT_MAX_DEPTH}")
    dumped = orjson.dumps(value)
    if len(dumped) > OBJECT_MAX_BYTES:
        raise MessageError(f"{field}: exceeds maximum size of 32 KB")
    if b"\\u0000" in dumped:  # PostgreSQL text and jsonb cannot hold NUL
        raise MessageError(f"{field}: contains a NUL character")
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


def _event_name(value, field: str) -> str:
    if value is None or value == "":
        raise MessageError(f"{field}: is required")
    if not isinstance(value, str):
        raise MessageError(f"{field}: must be a string")
    if len(value) > EVENT_MAX:
        raise MessageError(f"{field}: exceeds maximum length of {EVENT_MAX} characters")
    if not EVENT_RE.fullmatch(value):
        raise MessageError(f"{field}: contains characters outside a-zA-Z0-9 _ - and spaces")
    return value


def _page_name(value, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MessageError(f"{field}: must be a string")
    if len(value) > ID_MAX:
        raise MessageError(f"{field}: exceeds maximum length of {ID_MAX} characters")
    if "\x00" in value:
        raise MessageError(f"{field}: contains a NUL character")
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


def normalize(raw, *, received_at: datetime, default_type: str | None = None, prefix: str = "") -> dict:
    """Validate one call and return its normalised message, or raise MessageError.

    `prefix` is prepended to field names in errors (`batch[3].`). `default_type` is the type the
    endpoint implies; a body's own `type` must agree with it.
    """
    if not isinstance(raw, dict):
        raise MessageError(f"{prefix.rstrip('.') or 'body'}: must be a JSON object")
    p = prefix
    kind = raw.get("type") or default_type
    if default_type and kind != default_type:
        raise MessageError(f"{p}type: must be {default_type!r} on this endpoint")
    if kind not in TYPES:
        raise MessageError(f"{p}type: must be one of {', '.join(TYPES)}")

    customer_id = _id(_field(raw, "customer_id", "userId", "user_id"), f"{p}customer_id", CUSTOMER_ID_RE, _ID_CHARS)
    anonymous_id = _id(_field(raw, "anonymous_id", "anonymousId"), f"{p}anonymous_id", ANONYMOUS_ID_RE, _ANON)

    context = _object(raw.get("context"), f"{p}context", limit_keys=False) or {}
    integrations = raw.get("integrations")
    if integrations is not None and not isinstance(integrations, dict):
        raise MessageError(f"{p}integrations: must be an object")

    timestamp = parse_timestamp(raw.get("timestamp"), f"{p}timestamp")
    sent_at = parse_timestamp(_field(raw, "sentAt", "sent_at"), f"{p}sentAt")
    # Segment's clock-skew correction: the device clock is off by (sentAt - receivedAt), and the
    # event's timestamp came from the same clock.
    if timestamp is None:
        timestamp = received_at
    elif sent_at is not None:
        try:
            timestamp = timestamp + (received_at - sent_at)
        except OverflowError:  # sentAt thousands of years after timestamp: before year 1
            raise MessageError(f"{p}sentAt: out of range") from None
    if timestamp > received_at + FUTURE_TOLERANCE:
        context = {**context, "original_timestamp": raw.get("timestamp")}
        timestamp = received_at

    message_id = _field(raw, "message_id", "messageId")
    if message_id is not None:
        if not isinstance(message_id, (str, int)) or isinstance(message_id, bool):
            raise MessageError(f"{p}message_id: must be a string")
        message_id = str(message_id)
        if "\x00" in message_id:
            raise MessageError(f"{p}message_id: contains a NUL character")
        if len(message_id) > MESSAGE_ID_MAX:
            raise MessageError(f"{p}message_id: exceeds maximum length of {MESSAGE_ID_MAX} characters")
    message_id = message_id or str(uuid.uuid4())

    message = {
        "type": kind,
        "customer_id": customer_id,
        "anonymous_id": anonymous_id,
        "event": "",
        "traits": None,
        "properties": {},
        "context": context,
        "timestamp": timestamp.isoformat(),
        "message_id": message_id,
        "previous": None,
        "group_id": None,
    }

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
        previous = _id(_field(raw, "previous_id", "previousId"), f"{p}previous_id", CUSTOMER_ID_RE, _ID_CHARS)
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
        traits = _object(raw.get("traits"), f"{p}traits")
        if traits is None:
            # rudder-sdk-python and some Segment libraries send identify traits in context.traits.
            traits = _object(context.get("traits"), f"{p}context.traits")
        message["traits"] = traits or {}
    elif kind == "track":
        message["event"] = _event_name(raw.get("event"), f"{p}event")
        message["properties"] = _object(raw.get("properties"), f"{p}properties") or {}
    elif kind in ("page", "screen"):
        properties = _object(raw.get("properties"), f"{p}properties") or {}
        message["event"] = _page_name(raw.get("name", properties.get("name")), f"{p}name")
        message["properties"] = properties
    elif kind == "group":
        group_id = _id(_field(raw, "group_id", "groupId"), f"{p}group_id", ANONYMOUS_ID_RE, _ANON)
        if not group_id:
            raise MessageError(f"{p}group_id: is required")
        message["group_id"] = group_id
        message["traits"] = _object(raw.get("traits"), f"{p}traits") or {}
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
    sent_at = _field(raw, "sentAt", "sent_at")
    messages = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            if sent_at is not None and "sentAt" not in item and "sent_at" not in item:
                item = {**item, "sentAt": sent_at}
            if isinstance(shared_context, dict) and shared_context and "context" not in item:
                item = {**item, "context": shared_context}
            kind = item.get("type")
            if isinstance(kind, str) and kind in SHORT_TYPES:
                item = {**item, "type": SHORT_TYPES[kind]}
        prefix = f"batch[{index}]."
        if not isinstance(item, dict) or item.get("type") in (None, ""):
            raise MessageError(f"{prefix}type: is required")
        messages.append(normalize(item, received_at=received_at, prefix=prefix))
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
