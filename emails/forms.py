"""Forms of the email template pages: they parse and validate; the services in emails.services write."""

from django import forms
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat

from .models import EmailTemplate

# What an image upload may be, recognised by its first bytes (the name and the browser's content type
# are the sender's word). SVG is refused: it is served from the platform's origin and can carry script.
IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # email clients load every image of a message: keep them small


def image_kind(head: bytes) -> str | None:
    """The file extension of an image format Timonier accepts, from the file's first bytes."""
    for signature, kind in IMAGE_SIGNATURES:
        if head.startswith(signature):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


class TemplateCreateForm(forms.Form):
    name = forms.CharField(label="Name", max_length=EmailTemplate._meta.get_field("name").max_length)


class TemplateSettingsForm(forms.Form):
    subject = forms.CharField(label="Subject", required=False, max_length=998)
    preheader = forms.CharField(
        label="Preheader",
        required=False,
        max_length=255,
        help_text="The line inbox previews show after the subject.",
    )
    from_name = forms.CharField(label="From name", required=False, max_length=100)
    from_email = forms.EmailField(
        label="From address",
        required=False,
        help_text=(
            "Leave blank for the server's default sender; otherwise an address on one of the project's "
            "sending domains (Settings)."
        ),
    )
    reply_to = forms.EmailField(label="Reply-to", required=False)
    utm_source = forms.CharField(label="UTM source", required=False, max_length=100)
    utm_medium = forms.CharField(label="UTM medium", required=False, max_length=100)
    utm_campaign = forms.CharField(label="UTM campaign", required=False, max_length=100)
    utm_content = forms.CharField(label="UTM content", required=False, max_length=100)
    track_opens = forms.BooleanField(label="Open tracking", required=False, help_text="A 1×1 pixel in the email.")
    track_clicks = forms.BooleanField(
        label="Click tracking", required=False, help_text="Links go through a signed redirect that records the click."
    )

    FIELDS = (
        "subject",
        "preheader",
        "from_name",
        "from_email",
        "reply_to",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "track_opens",
        "track_clicks",
    )

    @classmethod
    def for_template(cls, template: EmailTemplate, data=None) -> "TemplateSettingsForm":
        return cls(data=data, initial={name: getattr(template, name) for name in cls.FIELDS})


class SendTestForm(forms.Form):
    to_email = forms.EmailField(label="Send test to")


class ImageUploadForm(forms.Form):
    file = forms.FileField(label="Image")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMAGE_BYTES:
            raise ValidationError(
                f"{upload.name}: {filesizeformat(upload.size)} is over the limit of {filesizeformat(MAX_IMAGE_BYTES)}."
            )
        head = upload.read(16)
        upload.seek(0)
        kind = image_kind(head)
        if kind is None:
            raise ValidationError(f"{upload.name}: not a PNG, JPEG, GIF or WebP image.")
        upload.image_kind = kind
        return upload
