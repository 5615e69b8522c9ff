import re
import zoneinfo

from django import forms

from .models import ApiKey, Organization, Project, Role, slug_validator

TIME_ZONES = sorted(zoneinfo.available_timezones())


class OrganizationForm(forms.Form):
    name = forms.CharField(label="Organization Name", max_length=100)
    slug = forms.CharField(
        label="Slug",
        max_length=50,
        validators=[slug_validator],
        help_text="Lowercase letters, numbers, and hyphens — for example acme-corp.",
    )

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if Organization.objects.filter(slug=slug).exists():
            raise forms.ValidationError("This slug is already taken. Choose another.")
        return slug


class ProjectForm(forms.Form):
    name = forms.CharField(label="Project Name", max_length=100)
    slug = forms.CharField(
        label="Slug",
        max_length=50,
        validators=[slug_validator],
        help_text="Lowercase letters, numbers, and hyphens — for example my-app.",
    )

    def __init__(self, *args, organization: Organization, **kwargs):
        super().__init__(*args, **kwargs)
        self.organization = organization

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if Project.objects.filter(organization=self.organization, slug=slug).exists():
            raise forms.ValidationError("This organization already has a project with this slug.")
        return slug


class ProjectSettingsForm(forms.Form):
    name = forms.CharField(label="Project Name", max_length=100)
    ingest_rate_limit = forms.IntegerField(
        label="API rate limit",
        required=False,
        min_value=1,
        max_value=1_000_000,
        help_text="Requests per second each API key of this project may send. Empty: the server's default.",
    )
    # Neither is required: a form posted without them (a script, an older page) leaves them as they are.
    timezone = forms.ChoiceField(
        label="Time zone",
        choices=[(name, name) for name in TIME_ZONES],
        initial="UTC",
        required=False,
        help_text="Workflow delays such as “until 9:00” use it for customers without a timezone trait.",
    )
    sending_domains = forms.CharField(
        label="Sending domains",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "mail.example.com"}),
        help_text=(
            "Domains this project's email templates may send from, one per line or comma-separated "
            "(besides the server's own sender domain). Set up SPF and DKIM for them with your SMTP relay."
        ),
    )

    @classmethod
    def for_project(cls, project: Project, data=None) -> "ProjectSettingsForm":
        initial = {
            "name": project.name,
            "ingest_rate_limit": project.ingest_rate_limit,
            "timezone": project.timezone,
            "sending_domains": "\n".join(project.sending_domains),
        }
        return cls(data=data, initial=initial)

    def clean_timezone(self) -> str | None:
        return self.cleaned_data["timezone"] or None

    def clean_sending_domains(self) -> list[str] | None:
        """The domains as a list; the service checks each one (its errors come back under this field)."""
        if "sending_domains" not in self.data:
            return None
        return [domain for domain in re.split(r"[\s,]+", self.cleaned_data["sending_domains"]) if domain]


class ApiKeyForm(forms.Form):
    # One sentence for each kind of key, shown under its choice.
    SCOPE_HELP = {
        ApiKey.Scope.SECRET: (
            "A secret key can send calls and also read customers and events, erase customers, and manage "
            "segments and workflows: keep it on your servers."
        ),
        ApiKey.Scope.WRITE: (
            "A write key is public (analytics.js puts it in your web pages' source) and can only send calls."
        ),
    }

    name = forms.CharField(label="Key Name", max_length=100, help_text="For example Backend Server.")
    # Not required: a form posted without it (a script, an older page) gets the default, as
    # `create_api_key` without --scope does.
    scope = forms.ChoiceField(
        label="Key type",
        choices=[(ApiKey.Scope.SECRET, "Secret key"), (ApiKey.Scope.WRITE, "Write key")],
        initial=ApiKey.Scope.SECRET,
        required=False,
        widget=forms.RadioSelect,
    )

    def clean_scope(self) -> str:
        return self.cleaned_data["scope"] or ApiKey.Scope.SECRET

    def scope_choices(self) -> list[tuple]:
        """The radio buttons of `scope`, each with its sentence."""
        return [(radio, self.SCOPE_HELP[radio.data["value"]]) for radio in self["scope"]]


class InvitationForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254)
    role = forms.ChoiceField(label="Role", choices=Role.choices, initial=Role.MEMBER)
