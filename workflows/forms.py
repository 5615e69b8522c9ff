"""The New Workflow form: name, description, the trigger and the frequency, as the guide names them.

The form only shapes what was typed into the definition's `trigger` and `frequency`
(docs/workflows.md); `services.workflow_create` validates it, and its "path: message" errors are
put back under the field each path belongs to (`trigger.event_name` → Event Name).
"""

import json

from django import forms

TRIGGER_TYPES = [
    ("event", "Event Occurred"),
    ("segment_entered", "Segment Entered"),
    ("segment_exited", "Segment Exited"),
    ("attribute_changed", "Attribute Changed"),
    ("api", "API"),
]
FREQUENCIES = [("once", "Once per customer"), ("every_time", "Every time"), ("once_per_period", "Once per period")]

# Where an error of the services, by the path it starts with, is shown; the longest prefix wins.
ERROR_FIELDS = {
    "name": "name",
    "description": "description",
    "trigger.type": "trigger_type",
    "trigger.event_name": "event_name",
    "trigger.where": "property_filters",
    "trigger.segment_id": "segment",
    "trigger.include_existing": "include_existing",
    "trigger.trait": "trait",
    "trigger.from": "trait_from",
    "trigger.to": "trait_to",
    "frequency.days": "days",
    "frequency": "frequency",
    "allow_concurrent_runs": "allow_concurrent_runs",
}


def _json_or_text(text: str):
    """A from/to value: JSON when it parses ("pro" is the text pro, 3 the number), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class WorkflowForm(forms.Form):
    # Not required here: the services check them with the rest, so every error shows at once.
    name = forms.CharField(label="Name", max_length=100, required=False)
    description = forms.CharField(label="Description", required=False, widget=forms.Textarea(attrs={"rows": 2}))
    trigger_type = forms.ChoiceField(label="Trigger Type", choices=TRIGGER_TYPES, initial="event")
    event_name = forms.CharField(label="Event Name", max_length=255, required=False)
    property_filters = forms.CharField(
        label="Property filters (JSON, optional)",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"}),
        help_text=(
            'Only events whose properties match, for example [{"name": "amount", "op": "greater_than", "value": 10}]'
        ),
    )
    segment = forms.TypedChoiceField(label="Segment", coerce=int, required=False, empty_value=None)
    include_existing = forms.BooleanField(label="Also enrol customers already in the segment", required=False)
    trait = forms.CharField(
        label="Trait Name", max_length=255, required=False, help_text="For example plan or address.city"
    )
    trait_from = forms.CharField(
        label="From (optional)", required=False, help_text="Only when the trait changes from this value (JSON or text)"
    )
    trait_to = forms.CharField(
        label="To (optional)", required=False, help_text="Only when the trait changes to this value (JSON or text)"
    )
    frequency = forms.ChoiceField(label="Frequency", choices=FREQUENCIES, initial="once")
    days = forms.IntegerField(
        label="Days", required=False, min_value=1, max_value=3650, help_text="At most once every N days"
    )
    allow_concurrent_runs = forms.BooleanField(
        label="Allow concurrent runs",
        required=False,
        help_text="Enrol a customer again while their previous run of this workflow is still in progress",
    )

    def __init__(self, *args, segments=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["segment"].choices = [("", "Choose a segment"), *[(s.pk, s.name) for s in segments]]

    def clean_property_filters(self):
        text = self.cleaned_data["property_filters"].strip()
        if not text:
            return []
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None

    def definition(self) -> dict:
        """The `{"trigger", "frequency", "steps": [], "edges": []}` the form describes."""
        data = self.cleaned_data
        kind = data["trigger_type"]
        trigger: dict = {"type": kind}
        if kind == "event":
            trigger["event_name"] = data["event_name"].strip()
            if data["property_filters"]:
                trigger["where"] = data["property_filters"]
        elif kind in ("segment_entered", "segment_exited"):
            trigger["segment_id"] = data["segment"]
            if kind == "segment_entered" and data["include_existing"]:
                trigger["include_existing"] = True
        elif kind == "attribute_changed":
            trigger["trait"] = data["trait"].strip()
            for field, key in (("trait_from", "from"), ("trait_to", "to")):
                if data[field].strip():
                    trigger[key] = _json_or_text(data[field].strip())
        frequency: dict = {"type": data["frequency"]}
        if data["frequency"] == "once_per_period":
            frequency["days"] = data["days"]
        definition = {"trigger": trigger, "frequency": frequency, "steps": [], "edges": []}
        if data["allow_concurrent_runs"]:
            definition["allow_concurrent_runs"] = True
        return definition

    def add_service_errors(self, message_dict: dict) -> None:
        """Put the services' errors (`{"definition": ["trigger.event_name: …"], "name": [...]}`) under their fields."""
        for key, messages in message_dict.items():
            for message in messages:
                path, _, text = message.partition(": ")
                field = None
                if key in ("name", "description"):
                    field, text = key, message
                else:
                    matches = [prefix for prefix in ERROR_FIELDS if path == prefix or path.startswith(prefix + ".")]
                    matches += [prefix for prefix in ERROR_FIELDS if path.startswith(prefix + "[")]
                    if matches:
                        field = ERROR_FIELDS[max(matches, key=len)]
                    if field is None or not text:
                        text = message
                self.add_error(field, text)
