from django import forms

from .models import User

CODE_HELP = "The 6-digit code your authenticator app shows."


class SignupForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254)
    first_name = forms.CharField(label="First name", max_length=150)
    last_name = forms.CharField(label="Last name", max_length=150)

    def clean_email(self) -> str:
        # No "already exists" error here: that would tell anyone which addresses have accounts.
        return User.objects.normalize_email(self.cleaned_data["email"]).lower()


class EmailForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254)

    def clean_email(self) -> str:
        return User.objects.normalize_email(self.cleaned_data["email"]).lower()


class TOTPCodeForm(forms.Form):
    code = forms.RegexField(
        label="6-digit code",
        regex=r"^\s*\d{3}\s?\d{3}\s*$",
        error_messages={"invalid": "Enter the 6 digits your authenticator app shows."},
        help_text=CODE_HELP,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


class LoginCodeForm(forms.Form):
    code = forms.CharField(
        label="6-digit code",
        max_length=32,
        help_text="The 6-digit code your authenticator app shows, or one of your recovery codes.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True}),
    )
