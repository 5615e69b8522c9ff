"""Opaque keyset cursors of the APIs: a JSON array of the last row's sort values, base64url without
padding. A cursor that does not decode to what its endpoint returned is `BadCursor`, which
`read_view` answers as a 400."""

import base64

import orjson

# Ids are PostgreSQL bigints: a larger number cannot be any row's (and would fail the query).
MAX_ID = 2**63 - 1


class BadCursor(ValueError):
    pass


def encode_cursor(*values) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str) -> list:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise BadCursor("cursor: not a cursor this API returned") from None
    if not isinstance(values, list):
        raise BadCursor("cursor: not a cursor this API returned")
    return values


def is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def decode_name_cursor(cursor: str) -> tuple[str, int]:
    """The (name, id) of a list ordered by name then id; names with a NUL are refused because
    PostgreSQL cannot compare with one."""
    values = decode_cursor(cursor)
    if len(values) != 2 or not isinstance(values[0], str) or not is_id(values[1]) or "\x00" in values[0]:
        raise BadCursor("cursor: not a cursor this API returned")
    return values[0], values[1]
