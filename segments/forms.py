"""The segment form: the condition is typed (or built) as JSON text, parsed here, validated by the services."""

import json

from django import forms

from .conditions.grammar import MAX_DEPTH


class SegmentForm(forms.Form):
    # Not required here: the services check it with the condition, so every error shows at once.
    name = forms.CharField(label="Name", max_length=100, required=False)
    description = forms.CharField(label="Description", required=False, widget=forms.Textarea(attrs={"rows": 2}))
    condition = forms.CharField(
        label="Condition (JSON)",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "mono", "data-condition-json": ""}),
        help_text='For example { "type": "trait", "name": "plan", "op": "equals", "value": "pro" }',
    )

    def clean_condition(self):
        return parse_condition(self.cleaned_data["condition"])


def parse_condition(text: str):
    """The JSON value of `text`; a ValidationError saying where it stops being JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(
            f"$: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", code="json"
        ) from None
    except RecursionError:  # json nests its parser a level per bracket: Python's stack is the limit
        raise forms.ValidationError(f"$: conditions nest deeper than {MAX_DEPTH} levels", code="depth") from None


# The order keys are shown in: the grammar's, since PostgreSQL's jsonb keeps them in its own.
KEY_ORDER = ["type", "name", "event_name", "op", "value", "unit", "from", "to", "count", "within", "between", "where"]
KEY_ORDER += ["conditions", "condition", "segment_id"]


def _ordered(value):
    if isinstance(value, list):
        return [_ordered(item) for item in value]
    if isinstance(value, dict):
        rank = {key: index for index, key in enumerate(KEY_ORDER)}
        keys = sorted(value, key=lambda key: (rank.get(key, len(rank)), key))
        return {key: _ordered(value[key]) for key in keys}
    return value


def condition_text(condition) -> str:
    """How a stored condition is shown for editing: pretty JSON, keys in the grammar's order."""
    return json.dumps(_ordered(condition), indent=2, ensure_ascii=False)
