"""The workflow definition JSON (docs/workflows.md): its validation and the graph it describes.

`structure_problems(definition)` checks what needs no database: shapes, the graph (reachability,
loops through a wait, a way out of every step), every condition with the segments' validator.
`definition_problems(project, definition)` adds what does: published templates and segments of the
project. Every problem is `path: message`, the path in the JSON (`steps[2].template_id`).
"""

import math
import re
from dataclasses import dataclass

import orjson

from segments.conditions import referenced_segments, validate

TRIGGER_TYPES = ("event", "segment_entered", "segment_exited", "attribute_changed", "api")
FREQUENCY_TYPES = ("once", "every_time", "once_per_period")
STEP_TYPES = (
    "email",
    "delay",
    "wait_until",
    "branch",
    "split",
    "random_cohort",
    "update_attribute",
    "webhook",
    "exit",
)
# Steps that wait for time to pass: a loop must go through one of them.
WAITING_STEPS = ("delay", "wait_until")
WEBHOOK_METHODS = ("POST", "PUT", "PATCH", "DELETE", "GET")
DURATION_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STEP_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
KEY_RE = re.compile(r"[a-z0-9_]{1,32}")
TIME_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
NAME_RE = re.compile(r"[^\x00]{1,255}")
MAX_STEPS = 200
MAX_EDGES = 400
MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_DURATION_SECONDS = 366 * 86400
TOP_KEYS = ("trigger", "frequency", "allow_concurrent_runs", "exit_condition", "goal", "steps", "edges", "layout")
STEP_KEYS = {
    "email": ("template_id",),
    "delay": ("duration", "until"),
    "wait_until": ("condition", "event", "timeout"),
    "branch": ("condition",),
    "split": ("branches",),
    "random_cohort": ("cohorts",),
    "update_attribute": ("action", "trait", "value"),
    "webhook": ("method", "url", "headers", "body", "response_traits"),
    "exit": (),
}
TRIGGER_KEYS = {
    "event": ("event_name", "where"),
    "segment_entered": ("segment_id", "include_existing"),
    "segment_exited": ("segment_id",),
    "attribute_changed": ("trait", "from", "to"),
    "api": (),
}


def empty_definition(trigger: dict, frequency: dict) -> dict:
    return {"trigger": trigger, "frequency": frequency, "steps": [], "edges": []}


def outputs_of(step: dict) -> tuple[str, ...]:
    """The named outputs of a step, in display order."""
    kind = step.get("type")
    if kind in ("wait_until",):
        return ("met", "timeout")
    if kind == "branch":
        return ("yes", "no")
    if kind == "split":
        branches = step.get("branches") if isinstance(step.get("branches"), list) else []
        return (*(b["key"] for b in branches if isinstance(b, dict) and isinstance(b.get("key"), str)), "else")
    if kind == "random_cohort":
        cohorts = step.get("cohorts") if isinstance(step.get("cohorts"), list) else []
        return tuple(c["key"] for c in cohorts if isinstance(c, dict) and isinstance(c.get("key"), str))
    if kind == "webhook":
        return ("next", "failure")
    if kind == "exit":
        return ()
    return ("next",)


@dataclass
class Graph:
    """The steps by id and where each output leads."""

    steps: dict[str, dict]
    first: str | None
    next: dict[tuple[str, str], str]

    @classmethod
    def of(cls, definition: dict) -> "Graph":
        steps = {s["id"]: s for s in definition.get("steps", []) if isinstance(s, dict) and "id" in s}
        following: dict[tuple[str, str], str] = {}
        first = None
        for edge in definition.get("edges", []):
            if not isinstance(edge, dict):
                continue
            output = edge.get("output") or "next"
            if edge.get("from") == "trigger":
                first = edge.get("to")
            else:
                following[(edge.get("from"), output)] = edge.get("to")
        return cls(steps, first, following)

    def after(self, step_id: str, output: str) -> str | None:
        return self.next.get((step_id, output))


def duration_seconds(duration) -> float | None:
    if not isinstance(duration, dict):
        return None
    value, unit = duration.get("value"), duration.get("unit")
    if not _is_number(value) or not isinstance(unit, str) or unit not in DURATION_UNITS:
        return None
    return float(value) * DURATION_UNITS[unit]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _depth(value, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def size_problems(definition) -> list[str]:
    """Bounds checked before anything walks the definition (deep JSON must not recurse far)."""
    if not isinstance(definition, dict):
        return ["definition: must be a JSON object"]
    if _depth(definition) > MAX_DEPTH:
        return [f"definition: nests deeper than {MAX_DEPTH} levels"]
    try:
        size = len(orjson.dumps(definition))
    except (TypeError, orjson.JSONEncodeError):
        return ["definition: must be plain JSON"]
    if size > MAX_BYTES:
        return [f"definition: exceeds {MAX_BYTES // 1024} KB"]
    return []


def trigger_problems(definition: dict) -> list[str]:
    """The trigger and the frequency: what the New Workflow form asks for."""
    errors: list[str] = []
    trigger = definition.get("trigger")
    if not isinstance(trigger, dict):
        return ["trigger: must be an object with a type"]
    kind = trigger.get("type")
    if kind not in TRIGGER_TYPES:
        errors.append(f"trigger.type: must be one of {', '.join(TRIGGER_TYPES)}")
    else:
        _unknown_keys(trigger, ("type", *TRIGGER_KEYS[kind]), "trigger", errors)
        if kind == "event":
            _name(trigger.get("event_name"), "trigger.event_name", "an event name", errors)
            where = trigger.get("where", [])
            if where:
                probe = {"type": "event", "event_name": "x", "where": where}
                errors.extend(_condition_paths(validate(probe), "trigger", only="where"))
        elif kind in ("segment_entered", "segment_exited"):
            if not _is_id(trigger.get("segment_id")):
                errors.append("trigger.segment_id: choose a segment")
            if "include_existing" in trigger and not isinstance(trigger["include_existing"], bool):
                errors.append("trigger.include_existing: must be true or false")
        elif kind == "attribute_changed":
            _name(trigger.get("trait"), "trigger.trait", "a trait name", errors)
    frequency = definition.get("frequency")
    if not isinstance(frequency, dict) or frequency.get("type") not in FREQUENCY_TYPES:
        errors.append(f"frequency.type: must be one of {', '.join(FREQUENCY_TYPES)}")
    elif frequency["type"] == "once_per_period":
        days = frequency.get("days")
        if not (isinstance(days, int) and not isinstance(days, bool) and 1 <= days <= 3650):
            errors.append("frequency.days: must be a whole number of days from 1 to 3650")
    if "allow_concurrent_runs" in definition and not isinstance(definition["allow_concurrent_runs"], bool):
        errors.append("allow_concurrent_runs: must be true or false")
    return errors


def structure_problems(definition) -> list[str]:
    """Every problem that needs no database, each `path: message`."""
    errors = size_problems(definition)
    if errors:
        return errors
    _unknown_keys(definition, TOP_KEYS, "", errors)
    errors.extend(trigger_problems(definition))
    if definition.get("exit_condition") is not None:
        errors.extend(_condition_paths(validate(definition["exit_condition"]), "exit_condition"))
    goal = definition.get("goal")
    if goal is not None:
        if not isinstance(goal, dict):
            errors.append("goal: must be an object with a condition and within_days")
        else:
            _unknown_keys(goal, ("condition", "within_days", "exit_on_conversion"), "goal", errors)
            errors.extend(_condition_paths(validate(goal.get("condition")), "goal.condition"))
            days = goal.get("within_days")
            if not (isinstance(days, int) and not isinstance(days, bool) and 1 <= days <= 365):
                errors.append("goal.within_days: must be a whole number of days from 1 to 365")
            if "exit_on_conversion" in goal and not isinstance(goal["exit_on_conversion"], bool):
                errors.append("goal.exit_on_conversion: must be true or false")
    steps = definition.get("steps", [])
    edges = definition.get("edges", [])
    if not isinstance(steps, list):
        return [*errors, "steps: must be a list"]
    if not isinstance(edges, list):
        return [*errors, "edges: must be a list"]
    if len(steps) > MAX_STEPS:
        return [*errors, f"steps: at most {MAX_STEPS} steps"]
    if len(edges) > MAX_EDGES:
        return [*errors, f"edges: at most {MAX_EDGES} edges"]
    if "layout" in definition and not isinstance(definition["layout"], dict):
        errors.append("layout: must be an object")
    ids: dict[str, int] = {}
    for index, step in enumerate(steps):
        path = f"steps[{index}]"
        if not isinstance(step, dict):
            errors.append(f"{path}: must be an object")
            continue
        step_id = step.get("id")
        if not isinstance(step_id, str) or not STEP_ID_RE.fullmatch(step_id) or step_id == "trigger":
            errors.append(f"{path}.id: must be 1-64 letters, digits, - or _ (and not \"trigger\")")
        elif step_id in ids:
            errors.append(f"{path}.id: \"{step_id}\" is also the id of steps[{ids[step_id]}]")
        else:
            ids[step_id] = index
        _step_problems(step, path, errors)
    errors.extend(_graph_problems(steps, edges, ids))
    return errors


def _step_problems(step: dict, path: str, errors: list[str]) -> None:
    kind = step.get("type")
    if kind not in STEP_TYPES:
        errors.append(f"{path}.type: must be one of {', '.join(STEP_TYPES)}")
        return
    _unknown_keys(step, ("id", "type", "name", *STEP_KEYS[kind]), path, errors)
    if "name" in step and not (isinstance(step["name"], str) and len(step["name"]) <= 100):
        errors.append(f"{path}.name: must be text of at most 100 characters")
    if kind == "email":
        if not _is_id(step.get("template_id")):
            errors.append(f"{path}.template_id: choose a published email template")
    elif kind == "delay":
        if ("duration" in step) == ("until" in step):
            errors.append(f"{path}: give either a duration or an until time")
        elif "duration" in step:
            _duration(step["duration"], f"{path}.duration", errors)
        else:
            _until(step["until"], f"{path}.until", errors)
    elif kind == "wait_until":
        if ("condition" in step) == ("event" in step):
            errors.append(f"{path}: give either a condition or an event to wait for")
        elif "condition" in step:
            errors.extend(_condition_paths(validate(step["condition"]), f"{path}.condition"))
        else:
            _wait_event(step["event"], f"{path}.event", errors)
        _duration(step.get("timeout"), f"{path}.timeout", errors)
    elif kind == "branch":
        errors.extend(_condition_paths(validate(step.get("condition")), f"{path}.condition"))
    elif kind == "split":
        _keyed(step.get("branches"), f"{path}.branches", 1, errors, condition=True)
    elif kind == "random_cohort":
        cohorts = step.get("cohorts")
        if _keyed(cohorts, f"{path}.cohorts", 2, errors, condition=False):
            weights = [c.get("weight") for c in cohorts]
            for index, weight in enumerate(weights):
                if not (isinstance(weight, int) and not isinstance(weight, bool) and 0 < weight <= 100):
                    errors.append(f"{path}.cohorts[{index}].weight: must be a whole number from 1 to 100")
            if all(isinstance(w, int) for w in weights) and sum(weights) != 100:
                errors.append(f"{path}.cohorts: weights must sum to 100, not {sum(weights)}")
    elif kind == "update_attribute":
        action = step.get("action")
        if action not in ("set", "unset", "increment"):
            errors.append(f"{path}.action: must be one of set, unset, increment")
        _name(step.get("trait"), f"{path}.trait", "a trait name", errors)
        if action == "set" and "value" not in step:
            errors.append(f"{path}.value: give the value to set")
        if action == "increment" and not _is_number(step.get("value")):
            errors.append(f"{path}.value: must be a number to add")
        if action == "unset" and "value" in step:
            errors.append(f"{path}.value: unset takes no value")
    elif kind == "webhook":
        _webhook(step, path, errors)


def _webhook(step: dict, path: str, errors: list[str]) -> None:
    if step.get("method", "POST") not in WEBHOOK_METHODS:
        errors.append(f"{path}.method: must be one of {', '.join(WEBHOOK_METHODS)}")
    url = step.get("url")
    if not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url) or len(url) > 2000:
        errors.append(f"{path}.url: must be an http:// or https:// URL (at most 2000 characters)")
    headers = step.get("headers", {})
    if not isinstance(headers, dict) or len(headers) > 30:
        errors.append(f"{path}.headers: must be an object of at most 30 text values")
    else:
        for name, value in headers.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}", name):
                errors.append(f"{path}.headers.{name}: not a valid header name")
            elif not isinstance(value, str) or len(value) > 4000 or "\n" in value or "\r" in value:
                errors.append(f"{path}.headers.{name}: must be one line of text (at most 4000 characters)")
            elif name.lower().startswith("webhook-") or name.lower() in ("host", "content-length"):
                errors.append(f"{path}.headers.{name}: is set by Timonier")
    body = step.get("body", "")
    if not isinstance(body, str) or len(body) > 64 * 1024:
        errors.append(f"{path}.body: must be text of at most 64 KB")
    traits = step.get("response_traits", {})
    if not isinstance(traits, dict) or len(traits) > 30:
        errors.append(f"{path}.response_traits: must be an object of at most 30 trait: json.path pairs")
    else:
        for trait, source in traits.items():
            if not isinstance(source, str) or not source:
                errors.append(f"{path}.response_traits.{trait}: must name a field of the response (a.b.c)")


def _graph_problems(steps: list, edges: list, ids: dict[str, int]) -> list[str]:
    errors: list[str] = []
    by_id = {s["id"]: s for s in steps if isinstance(s, dict) and isinstance(s.get("id"), str) and s["id"] in ids}
    following: dict[tuple[str, str], str] = {}
    first = None
    for index, edge in enumerate(edges):
        path = f"edges[{index}]"
        if not isinstance(edge, dict):
            errors.append(f"{path}: must be an object with from and to")
            continue
        _unknown_keys(edge, ("from", "output", "to"), path, errors)
        source, target, output = edge.get("from"), edge.get("to"), edge.get("output") or "next"
        if any(isinstance(value, (list, dict)) for value in (source, target, output)):
            errors.append(f"{path}: from, to and output must be a step id, a step id and an output name")
            continue
        if target not in by_id:
            errors.append(f"{path}.to: no step \"{target}\"")
            continue
        if source == "trigger":
            if output != "next":
                errors.append(f"{path}.output: the trigger has one output, next")
            elif first is not None:
                errors.append(f"{path}: the trigger already leads to \"{first}\"")
            else:
                first = target
            continue
        if source not in by_id:
            errors.append(f"{path}.from: no step \"{source}\"")
            continue
        if output not in outputs_of(by_id[source]):
            allowed = ", ".join(o for o in outputs_of(by_id[source]) if o) or "none"
            errors.append(f"{path}.output: step \"{source}\" has no output \"{output}\" (it has: {allowed})")
            continue
        if (source, output) in following:
            taken = following[(source, output)]
            errors.append(f"{path}: output \"{output}\" of \"{source}\" already leads to \"{taken}\"")
            continue
        following[(source, output)] = target
    if first is None:
        errors.append("edges: the trigger leads nowhere; add a step after it")
        return errors
    successors: dict[str, list[str]] = {step_id: [] for step_id in by_id}
    for (source, _), target in following.items():
        successors[source].append(target)
    reachable = _reach({first}, successors)
    for step_id in by_id:
        if step_id not in reachable:
            errors.append(f"steps[{ids[step_id]}]: is not reachable from the trigger")
    # A step ends the run when one of its outputs has no edge (or it is an Exit step).
    ends = {
        step_id
        for step_id, step in by_id.items()
        if step.get("type") == "exit" or any((step_id, o) not in following for o in outputs_of(step) if o != "failure")
    }
    predecessors: dict[str, list[str]] = {step_id: [] for step_id in by_id}
    for source, targets in successors.items():
        for target in targets:
            predecessors[target].append(source)
    can_end = _reach(ends, predecessors)
    for step_id in reachable - can_end:
        errors.append(f"steps[{ids[step_id]}]: every path from this step loops forever; give it a way out")
    # A loop without a waiting step would run without pause: the non-waiting steps must form no cycle.
    quick = {step_id for step_id, step in by_id.items() if step.get("type") not in WAITING_STEPS}
    cycle = _find_cycle(quick, successors)
    if cycle:
        errors.append(f"steps[{ids[cycle]}]: is on a loop without a delay or wait; add one to the loop")
    return errors


def _reach(start: set[str], links: dict[str, list[str]]) -> set[str]:
    seen, pending = set(start), list(start)
    while pending:
        for other in links.get(pending.pop(), ()):
            if other not in seen:
                seen.add(other)
                pending.append(other)
    return seen


def _find_cycle(nodes: set[str], successors: dict[str, list[str]]) -> str | None:
    """A node of a cycle among `nodes` (iterative depth-first search), else None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in sorted(nodes):
        if root in state:
            continue
        stack = [(root, iter(successors.get(root, ())))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next((c for c in children if c in nodes), None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                return child
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(successors.get(child, ()))))
    return None


def _keyed(items, path: str, minimum: int, errors: list[str], *, condition: bool) -> bool:
    if not isinstance(items, list) or not minimum <= len(items) <= 10:
        errors.append(f"{path}: must be a list of {minimum} to 10 items")
        return False
    keys: set[str] = set()
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{item_path}: must be an object")
            return False
        allowed = ("key", "name", "condition") if condition else ("key", "name", "weight")
        _unknown_keys(item, allowed, item_path, errors)
        key = item.get("key")
        if not isinstance(key, str) or not KEY_RE.fullmatch(key) or key in ("else", "next"):
            errors.append(f"{item_path}.key: must be 1-32 lower-case letters, digits or _ (not else)")
        elif key in keys:
            errors.append(f"{item_path}.key: \"{key}\" is used twice")
        if isinstance(key, str):
            keys.add(key)
        if "name" in item and not (isinstance(item["name"], str) and len(item["name"]) <= 100):
            errors.append(f"{item_path}.name: must be text of at most 100 characters")
        if condition:
            errors.extend(_condition_paths(validate(item.get("condition")), f"{item_path}.condition"))
    return True


def _duration(duration, path: str, errors: list[str]) -> None:
    seconds = duration_seconds(duration)
    if seconds is None:
        units = "|".join(DURATION_UNITS)
        errors.append(f"{path}: must be {{\"value\": <number>, \"unit\": \"{units}\"}}")
    elif not 0 < seconds <= MAX_DURATION_SECONDS:
        errors.append(f"{path}: must be more than 0 and at most 366 days")
    elif set(duration) - {"value", "unit"}:
        errors.append(f"{path}: unknown key; expected value and unit")


def _until(until, path: str, errors: list[str]) -> None:
    if not isinstance(until, dict):
        errors.append(f"{path}: must be {{\"time\": \"HH:MM\", \"days\": [\"mon\", …]}}")
        return
    _unknown_keys(until, ("time", "days"), path, errors)
    if not isinstance(until.get("time"), str) or not TIME_RE.fullmatch(until["time"]):
        errors.append(f"{path}.time: must be a time of day as HH:MM (00:00 to 23:59)")
    days = until.get("days", list(DAYS))
    if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
        errors.append(f"{path}.days: must be a non-empty list of {', '.join(DAYS)}")


def _wait_event(event, path: str, errors: list[str]) -> None:
    if not isinstance(event, dict):
        errors.append(f"{path}: must be an object with event_name and match")
        return
    _unknown_keys(event, ("event_name", "match"), path, errors)
    _name(event.get("event_name"), f"{path}.event_name", "an event name", errors)
    match = event.get("match", [])
    if not isinstance(match, list) or len(match) > 10:
        errors.append(f"{path}.match: must be a list of at most 10 property pairs")
        return
    for index, pair in enumerate(match):
        if not isinstance(pair, dict) or set(pair) != {"property", "trigger_property"}:
            errors.append(f"{path}.match[{index}]: must be {{\"property\": …, \"trigger_property\": …}}")
            continue
        for key in ("property", "trigger_property"):
            _name(pair[key], f"{path}.match[{index}].{key}", "a property name", errors)


def _name(value, path: str, what: str, errors: list[str]) -> None:
    if not isinstance(value, str) or not value.strip():
        errors.append(f"{path}: enter {what}")
    elif len(value) > 255 or "\x00" in value:
        errors.append(f"{path}: at most 255 characters, no NUL")


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


def _unknown_keys(node: dict, allowed, path: str, errors: list[str]) -> None:
    for key in node:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            errors.append(f"{where}: unknown key; expected one of {', '.join(allowed)}")


def _condition_paths(problems: list[str], prefix: str, *, only: str | None = None) -> list[str]:
    """The condition validator's `path: message` under `prefix` (`$` is the condition itself)."""
    out = []
    for problem in problems:
        path, _, message = problem.partition(": ")
        if only is not None:
            if not path.startswith(only):
                continue
            out.append(f"{prefix}.{path}: {message}")
        elif path in ("", "$"):
            out.append(f"{prefix}: {message}")
        else:
            out.append(f"{prefix}.{path}: {message}")
    return out


def conditions_of(definition: dict) -> list[tuple[str, dict]]:
    """Every condition of a (structurally valid) definition, with its path."""
    found = []
    if definition.get("exit_condition") is not None:
        found.append(("exit_condition", definition["exit_condition"]))
    if isinstance(definition.get("goal"), dict):
        found.append(("goal.condition", definition["goal"].get("condition")))
    for index, step in enumerate(definition.get("steps", [])):
        if step.get("type") in ("branch", "wait_until") and "condition" in step:
            found.append((f"steps[{index}].condition", step["condition"]))
        for b_index, branch in enumerate(step.get("branches") or []) if step.get("type") == "split" else ():
            found.append((f"steps[{index}].branches[{b_index}].condition", branch.get("condition")))
    return found


def segments_used(definition: dict) -> set[int]:
    used = set()
    for _, condition in conditions_of(definition):
        used |= referenced_segments(condition)
    trigger = definition.get("trigger") or {}
    if trigger.get("type") in ("segment_entered", "segment_exited") and _is_id(trigger.get("segment_id")):
        used.add(trigger["segment_id"])
    return used


def watches_changes(definition: dict) -> bool:
    """Whether runs must be re-checked when the customer's data changes (exit condition or goal)."""
    return definition.get("exit_condition") is not None or definition.get("goal") is not None


def wait_event_names(definition: dict) -> set[str]:
    return {
        step["event"]["event_name"]
        for step in definition.get("steps", [])
        if step.get("type") == "wait_until" and isinstance(step.get("event"), dict)
    }


def first_step(definition: dict) -> str | None:
    return Graph.of(definition).first

