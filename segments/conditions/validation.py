"""Checking a condition before anyone stores or runs it: every problem, each with its JSON path."""

import difflib

from .grammar import (
    ALIASES,
    CONDITION_KEYS,
    COUNT_OPERATORS,
    LIST_OPERATORS,
    MAX_DEPTH,
    MAX_INTEGER,
    MAX_LIST_ITEMS,
    MAX_LIST_VALUES,
    MAX_NAME,
    MAX_NODES,
    MAX_STRING,
    MAX_WINDOW,
    OPERATORS,
    ORDERING_OPERATORS,
    PRESENCE_OPERATORS,
    STRING_OPERATORS,
    WHERE_KEYS,
    WINDOW_UNITS,
    is_date,
    is_number,
    is_scalar,
    parse_instant,
)


class InvalidCondition(ValueError):
    """Raised by `matches` and `compile_sql` for a condition `validate` rejects."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def validate(condition) -> list[str]:
    """Every problem of the condition as `path: message`; an empty list means it is valid."""
    nodes, list_values = _size(condition)
    if nodes > MAX_NODES:
        # Alone: the thousands of problems a condition this big may also have would say less.
        return [f"$: has more than {MAX_NODES} conditions (with where filters); combine smaller segments instead"]
    errors: list[str] = []
    if list_values > MAX_LIST_VALUES:
        errors.append(f"$: has {list_values} list values in all; at most {MAX_LIST_VALUES}")
    _check_condition(condition, "", 1, errors)
    return errors


def ensure_valid(condition) -> None:
    errors = validate(condition)
    if errors:
        raise InvalidCondition(errors)


def _size(condition) -> tuple[int, int]:
    """(condition objects and `where` filters, values of `in`/`not_in` lists), counted without
    recursion and given up past MAX_NODES, so a condition of any size or depth costs little."""
    nodes = list_values = 0
    pending = [condition]
    while pending and nodes <= MAX_NODES:
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        nodes += 1
        if node.get("op") in LIST_OPERATORS and isinstance(node.get("value"), list):
            list_values += len(node["value"])
        for key in ("conditions", "where"):
            if isinstance(node.get(key), list):
                pending.extend(node[key])
        pending.append(node.get("condition"))
    return nodes, list_values


def _too_long(value) -> bool:
    return isinstance(value, str) and len(value) > MAX_STRING


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _at(path: str) -> str:
    return path or "$"


def _suggest(word, choices, *, aliases: dict | None = None) -> str:
    """`; did you mean "x"?` for a near miss, else the list of what is allowed."""
    if isinstance(word, str):
        match = (aliases or {}).get(word.lower())
        if match is None:
            close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
            match = close[0] if close else None
        if match is not None:
            return f'; did you mean "{match}"?'
    return "; expected one of: " + ", ".join(f'"{choice}"' for choice in choices)


def _quote(value) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _check_keys(node: dict, allowed, path: str, errors: list[str]) -> None:
    for key in node:
        if key not in allowed:
            errors.append(f"{_join(path, str(key))}: unknown key{_suggest(key, allowed)}")


def _check_condition(node, path: str, depth: int, errors: list[str]) -> None:
    if not isinstance(node, dict):
        errors.append(f"{_at(path)}: must be an object")
        return
    if depth > MAX_DEPTH:
        errors.append(f"{_at(path)}: conditions nest deeper than {MAX_DEPTH} levels")
        return
    kind = node.get("type")
    if "type" not in node:
        errors.append(f"{_join(path, 'type')}: is required")
        return
    if not isinstance(kind, str) or kind not in CONDITION_KEYS:
        errors.append(f"{_join(path, 'type')}: unknown condition type {_quote(kind)}{_suggest(kind, CONDITION_KEYS)}")
        return
    _check_keys(node, CONDITION_KEYS[kind], path, errors)
    if kind == "trait":
        _check_name(node, "name", path, errors)
        _check_operator(node, path, errors)
    elif kind == "event":
        _check_event(node, path, errors)
    elif kind == "segment":
        segment_id = node.get("segment_id")
        if "segment_id" not in node:
            errors.append(f"{_join(path, 'segment_id')}: is required")
        elif not _is_count(segment_id) or not 1 <= segment_id <= MAX_INTEGER:
            errors.append(f"{_join(path, 'segment_id')}: must be a positive integer (a segment's id)")
    elif kind == "not":
        if "condition" not in node:
            errors.append(f"{_join(path, 'condition')}: is required")
        else:
            _check_condition(node["condition"], _join(path, "condition"), depth + 1, errors)
    else:
        children = node.get("conditions")
        children_path = _join(path, "conditions")
        if "conditions" not in node:
            errors.append(f"{children_path}: is required")
        elif not isinstance(children, list):
            errors.append(f"{children_path}: must be a list")
        elif not children:
            errors.append(f"{children_path}: must not be empty")
        else:
            for index, child in enumerate(children):
                _check_condition(child, f"{children_path}[{index}]", depth + 1, errors)


def _check_name(node: dict, key: str, path: str, errors: list[str]) -> None:
    where = _join(path, key)
    if key not in node:
        errors.append(f"{where}: is required")
        return
    name = node[key]
    if not isinstance(name, str) or not name:
        errors.append(f"{where}: must be a non-empty string")
    elif len(name) > MAX_NAME:
        errors.append(f"{where}: exceeds maximum length of {MAX_NAME} characters")
    elif any(not step for step in name.split(".")):
        errors.append(f"{where}: has an empty step in {_quote(name)}")
    elif '"' in name or "\\" in name:
        errors.append(f"{where}: must not contain quotes or backslashes")


def _check_operator(node: dict, path: str, errors: list[str]) -> None:
    """The `op` and `value` of a trait condition or a `where` filter."""
    op_path, value_path = _join(path, "op"), _join(path, "value")
    if "op" not in node:
        errors.append(f"{op_path}: is required")
        return
    op = node["op"]
    if op not in OPERATORS:
        errors.append(f"{op_path}: unknown operator {_quote(op)}{_suggest(op, OPERATORS, aliases=ALIASES)}")
        return
    if op in PRESENCE_OPERATORS:
        if "value" in node:
            errors.append(f'{value_path}: not allowed with operator "{op}"')
        return
    if "value" not in node:
        errors.append(f'{value_path}: is required with operator "{op}"')
        return
    value = node["value"]
    if op in LIST_OPERATORS:
        if not isinstance(value, list):
            errors.append(f'{value_path}: must be a list with operator "{op}"')
            return
        if len(value) > MAX_LIST_ITEMS:
            errors.append(f"{value_path}: has {len(value)} values; at most {MAX_LIST_ITEMS}")
            return
        for index, item in enumerate(value):
            if not is_scalar(item):
                errors.append(f"{value_path}[{index}]: must be a string, a number or a boolean")
            elif _too_long(item):
                errors.append(f"{value_path}[{index}]: exceeds maximum length of {MAX_STRING} characters")
        return
    if _too_long(value):
        errors.append(f"{value_path}: exceeds maximum length of {MAX_STRING} characters")
        return
    if op in ORDERING_OPERATORS:
        if not (is_number(value) and is_scalar(value)) and not is_date(value):
            errors.append(
                f'{value_path}: must be a number or a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ) with operator "{op}"'
            )
    elif op in STRING_OPERATORS:
        if not isinstance(value, str):
            errors.append(f'{value_path}: must be a string with operator "{op}"')
    elif not is_scalar(value):
        errors.append(f'{value_path}: must be a string, a number or a boolean with operator "{op}"')


def _check_event(node: dict, path: str, errors: list[str]) -> None:
    _check_name(node, "event_name", path, errors)
    if "count" in node:
        _check_count(node["count"], _join(path, "count"), errors)
    if "within" in node:
        _check_within(node["within"], _join(path, "within"), errors)
        if "between" in node:
            errors.append(f'{_join(path, "between")}: cannot be combined with "within"')
    if "between" in node:
        _check_between(node["between"], _join(path, "between"), errors)
    if "where" in node:
        where_path = _join(path, "where")
        filters = node["where"]
        if not isinstance(filters, list):
            errors.append(f"{where_path}: must be a list")
            return
        for index, item in enumerate(filters):
            item_path = f"{where_path}[{index}]"
            if not isinstance(item, dict):
                errors.append(f"{item_path}: must be an object")
                continue
            _check_keys(item, WHERE_KEYS, item_path, errors)
            _check_name(item, "name", item_path, errors)
            _check_operator(item, item_path, errors)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_count(count, path: str, errors: list[str]) -> None:
    if not isinstance(count, dict):
        errors.append(f"{path}: must be an object")
        return
    _check_keys(count, ("op", "value"), path, errors)
    op = count.get("op")
    if "op" not in count:
        errors.append(f"{_join(path, 'op')}: is required")
    elif op not in COUNT_OPERATORS:
        aliases = {alias: name for alias, name in ALIASES.items() if name in COUNT_OPERATORS}
        errors.append(
            f"{_join(path, 'op')}: unknown count operator {_quote(op)}{_suggest(op, COUNT_OPERATORS, aliases=aliases)}"
        )
    if "value" not in count:
        errors.append(f"{_join(path, 'value')}: is required")
    elif not _is_count(count["value"]) or not 0 <= count["value"] <= MAX_INTEGER:
        errors.append(f"{_join(path, 'value')}: must be a non-negative integer")


def _check_within(within, path: str, errors: list[str]) -> None:
    if not isinstance(within, dict):
        errors.append(f"{path}: must be an object")
        return
    _check_keys(within, ("value", "unit"), path, errors)
    if "value" not in within:
        errors.append(f"{_join(path, 'value')}: is required")
    elif not _is_count(within["value"]) or not 1 <= within["value"] <= MAX_WINDOW:
        errors.append(f"{_join(path, 'value')}: must be a positive integer up to {MAX_WINDOW}")
    unit = within.get("unit")
    if "unit" not in within:
        errors.append(f"{_join(path, 'unit')}: is required")
    elif not isinstance(unit, str) or unit not in WINDOW_UNITS:
        errors.append(f"{_join(path, 'unit')}: unknown unit {_quote(unit)}{_suggest(unit, WINDOW_UNITS)}")


def _check_between(between, path: str, errors: list[str]) -> None:
    if not isinstance(between, dict):
        errors.append(f"{path}: must be an object")
        return
    _check_keys(between, ("from", "to"), path, errors)
    bounds = {}
    for key in ("from", "to"):
        if key not in between:
            errors.append(f"{_join(path, key)}: is required")
            continue
        bounds[key] = parse_instant(between[key])
        if bounds[key] is None:
            errors.append(f"{_join(path, key)}: must be an ISO-8601 date or date-time")
    if bounds.get("from") and bounds.get("to") and bounds["from"] >= bounds["to"]:
        errors.append(f'{path}: "from" must be before "to"')
