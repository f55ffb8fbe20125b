"""Forms parse and present; the domain's rules live in mailing.rules and mailing.services.

``apply_service_errors`` maps a service's ValidationError (field -> messages, with names
such as ``filter.operator_codes``) onto the form's fields.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from mailing import phones, rules, selectors
from mailing.models import Mailing
from mailing.rules import TEXT_MAX_LENGTH, TIMEZONE_MAX_LENGTH, EmptySendWindow, SendWindow

DATETIME_FORMAT = "%Y-%m-%dT%H:%M"
# Free-text inputs take this much, so that the services, not the form, word what is wrong.
INPUT_MAX_LENGTH = 200


class DateTimeLocalInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, **kwargs):
        super().__init__(format=DATETIME_FORMAT, **kwargs)


class TimeInput(forms.TimeInput):
    input_type = "time"

    def __init__(self, **kwargs):
        super().__init__(format="%H:%M", **kwargs)


def apply_service_errors(form: forms.Form, error: ValidationError, aliases: dict) -> None:
    """Put each of the service's field errors next to the form field it belongs to."""
    for name, messages in error.message_dict.items():
        field = aliases.get(name, name)
        if field not in form.fields:
            field = None  # shown above the form
        for message in messages:
            form.add_error(field, message)


def _set_choices(form: forms.Form, name: str, choices: list[tuple[str, str]]) -> None:
    """Fill a choice field's options (known only when the form is built)."""
    field = form.fields[name]
    assert isinstance(field, forms.ChoiceField)
    field.choices = choices


class MailingForm(forms.Form):
    name = forms.CharField(
        label="Name",
        max_length=INPUT_MAX_LENGTH,
        strip=False,
        help_text="What staff will call it in lists and reports.",
    )
    start_at = forms.DateTimeField(
        label="Start", widget=DateTimeLocalInput(), input_formats=[DATETIME_FORMAT]
    )
    end_at = forms.DateTimeField(
        label="End", widget=DateTimeLocalInput(), input_formats=[DATETIME_FORMAT]
    )
    text = forms.CharField(
        label="Text",
        strip=False,
        widget=forms.Textarea(
            attrs={"rows": 5, "data-count-max": TEXT_MAX_LENGTH, "aria-describedby": "text-count"}
        ),
    )
    operator_codes = forms.MultipleChoiceField(
        label="Operator codes",
        required=False,
        help_text="None selected: every operator.",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )
    tags = forms.MultipleChoiceField(
        label="Tags",
        required=False,
        help_text="None selected: every tag.",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )
    window_start = forms.TimeField(
        label="Send window from",
        required=False,
        widget=TimeInput(),
        help_text="In each client's own local time. Leave both empty to send at any hour.",
    )
    window_end = forms.TimeField(label="Send window until", required=False, widget=TimeInput())
    rate_limit = forms.FloatField(
        label="Send rate limit (messages per second)",
        required=False,
        help_text="Empty: only the service-wide limit. It can change while the mailing runs.",
        widget=forms.NumberInput(attrs={"step": "any", "min": "0"}),
    )

    # Service field names -> form field names.
    ALIASES = {
        "filter.operator_codes": "operator_codes",
        "filter.tags": "tags",
        "send_window": "window_start",
    }
    # Form field -> the mailing field (as services and mailing.rules name it) it edits.
    MAILING_FIELD_OF = {
        "name": "name",
        "start_at": "start_at",
        "end_at": "end_at",
        "text": "text",
        "operator_codes": "operator_codes",
        "tags": "tags",
        "window_start": "send_window",
        "window_end": "send_window",
        "rate_limit": "rate_limit",
    }
    text_max_length = TEXT_MAX_LENGTH

    def __init__(self, *args: Any, editable: frozenset[str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # What the mailing's state lets change (all of it for a new mailing); the rest is
        # shown disabled, and a disabled field keeps its initial value whatever is posted.
        self.editable = frozenset(rules.MAILING_FIELDS) if editable is None else editable
        for name, field in self.fields.items():
            if self.MAILING_FIELD_OF[name] not in self.editable:
                field.disabled = True
        codes = selectors.operator_code_choices()
        tags = selectors.tag_choices()
        # Keep the mailing's own values selectable even if no client has them any more.
        for value in self.initial.get("operator_codes", []):
            if value not in codes:
                codes.append(value)
        for value in self.initial.get("tags", []):
            if value not in tags:
                tags.append(value)
        _set_choices(self, "operator_codes", [(c, c) for c in sorted(codes)])
        _set_choices(self, "tags", [(t, t) for t in sorted(tags)])

    @staticmethod
    def initial_of(mailing: Mailing) -> dict[str, object]:
        """The form's values for an existing mailing, in the staff member's zone."""
        return {
            "name": mailing.name,
            "start_at": timezone.localtime(mailing.start_at),
            "end_at": timezone.localtime(mailing.end_at),
            "text": mailing.text,
            "operator_codes": list(mailing.operator_codes),
            "tags": list(mailing.tags),
            "window_start": mailing.window_start,
            "window_end": mailing.window_end,
            "rate_limit": mailing.rate_limit,
        }

    @property
    def editable_labels(self) -> list[str]:
        """The words for what may still change, when that is not everything."""
        if self.editable == frozenset(rules.MAILING_FIELDS):
            return []
        return [label for name, label in rules.MAILING_FIELDS.items() if name in self.editable]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        start, end = data.get("window_start"), data.get("window_end")
        data["send_window"] = None
        if (start is None) != (end is None):
            self.add_error("window_start", "Give both ends of the send window, or neither.")
        elif start is not None and end is not None:
            try:
                data["send_window"] = SendWindow(start, end)
            except EmptySendWindow as error:
                apply_service_errors(self, error, self.ALIASES)
        return data

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "start_at": data["start_at"],
            "end_at": data["end_at"],
            "text": data["text"],
            "operator_codes": list(data.get("operator_codes") or []),
            "tags": list(data.get("tags") or []),
            "send_window": data["send_window"],
            "rate_limit": data.get("rate_limit"),
        }

    def changes(self) -> dict[str, Any]:
        """The service arguments of the fields the staff member changed."""
        arguments = self.service_arguments()
        changed = {self.MAILING_FIELD_OF[name] for name in self.changed_data}
        return {name: value for name, value in arguments.items() if name in changed}


class LaunchForm(forms.Form):
    """Check and send: the count the staff member saw, and above the threshold the count
    typed again. The real button is named ``send``; the form's first (default) button is a
    disabled one, so Enter in a field submits nothing."""

    audience = forms.IntegerField(min_value=0, widget=forms.HiddenInput)
    confirm_count = forms.CharField(
        label="Type the number of clients to confirm",
        required=False,
        max_length=INPUT_MAX_LENGTH,
        widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "off"}),
    )

    def __init__(self, *args: Any, reachable: int, typed: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.reachable = reachable
        self.typed = typed
        if not typed:
            del self.fields["confirm_count"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if "audience" in data and data["audience"] != self.reachable:
            raise ValidationError(
                f"The audience changed since this page was shown: it is now "
                f"{self.reachable:,}. Check it again before sending."
            )
        if self.typed:
            typed = "".join(ch for ch in data.get("confirm_count", "") if ch.isdigit())
            if typed != str(self.reachable):
                self.add_error("confirm_count", f"Type {self.reachable:,} to confirm.")
        return data


class TestSendForm(forms.Form):
    phone = forms.CharField(
        label="Send a test to",
        max_length=INPUT_MAX_LENGTH,
        help_text=f"{rules.PHONE_LENGTH} digits starting with 7.",
        widget=forms.TextInput(attrs={"inputmode": "tel", "autocomplete": "tel"}),
    )


class PreviewForm(forms.Form):
    """The audience part of the mailing form, as the live preview reads it (lenient)."""

    operator_codes = forms.MultipleChoiceField(required=False)
    tags = forms.MultipleChoiceField(required=False)
    start_at = forms.DateTimeField(required=False, input_formats=[DATETIME_FORMAT])
    end_at = forms.DateTimeField(required=False, input_formats=[DATETIME_FORMAT])
    window_start = forms.TimeField(required=False)
    window_end = forms.TimeField(required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _set_choices(self, "operator_codes", [(c, c) for c in selectors.operator_code_choices()])
        _set_choices(self, "tags", [(t, t) for t in selectors.tag_choices()])


class ClientForm(forms.Form):
    phone = forms.CharField(
        label="Phone",
        max_length=INPUT_MAX_LENGTH,
        help_text="Any common notation: +7 916 123-45-67, 8 (916) 123-45-67, 79161234567.",
    )
    operator_code = forms.CharField(
        label="Operator code",
        required=False,
        max_length=8,
        help_text="Leave empty to take it from the phone.",
    )
    tag = forms.CharField(label="Tag", required=False, max_length=INPUT_MAX_LENGTH, strip=False)
    timezone = forms.ChoiceField(label="Time zone")

    def clean_phone(self) -> str:
        # Stored as 79161234567; what cannot be read so is left for the service to word.
        return phones.normalise(self.cleaned_data["phone"])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _set_choices(
            self,
            "timezone",
            [("", "Choose a time zone")] + [(z, z) for z in sorted(rules.known_timezones())],
        )


class ImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text=(
            "A header row naming phone and timezone (optionally operator_code, tag); commas, "
            "semicolons or tabs; UTF-8 or Windows-1251, as Excel saves it."
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.txt,text/csv"}),
    )

    @classmethod
    def refusing_a_large_file(cls) -> ImportForm:
        """The form as shown for an upload refused by its length, before it was read."""
        form = cls(data={}, files=MultiValueDict())
        form.is_valid()
        form.errors.clear()
        form.add_error("file", ValidationError(cls.too_large_message(), code="too_large"))
        return form

    @staticmethod
    def too_large_message() -> str:
        limit = settings.CLIENT_IMPORT_MAX_BYTES
        return f"The file is larger than {limit / 1024 / 1024:g} MB ({limit:,} bytes); split it."

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > settings.CLIENT_IMPORT_MAX_BYTES:
            raise ValidationError(self.too_large_message(), code="too_large")
        return upload


class ImportConfirmForm(forms.Form):
    update_existing = forms.BooleanField(
        label="Update the clients already here (same phone) with the file's time zone, tag "
        "and operator code",
        required=False,
    )


class TokenForm(forms.Form):
    name = forms.CharField(
        label="Token name", max_length=INPUT_MAX_LENGTH, help_text="What uses it, e.g. “CRM sync”."
    )
    days = forms.IntegerField(
        label="Expires after (days)",
        required=False,  # blank: API_TOKEN_DAYS
        min_value=1,
        max_value=rules.TOKEN_MAX_DAYS,
        help_text=f"1 to {rules.TOKEN_MAX_DAYS}; it stops working then.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["days"].initial = settings.API_TOKEN_DAYS


class TimezoneForm(forms.Form):
    timezone = forms.CharField(max_length=TIMEZONE_MAX_LENGTH)
    next = forms.CharField(required=False, max_length=2000)


class IdsField(forms.TypedMultipleChoiceField):
    """Row ids posted by the checkboxes of a table (any number-like value; the query
    decides which of them exist)."""

    def __init__(self, **kwargs: Any):
        super().__init__(coerce=int, required=False, **kwargs)

    def valid_value(self, value: object) -> bool:
        return isinstance(value, str) and value.isdigit() and len(value) <= rules.ID_MAX_DIGITS


class BulkClientsForm(forms.Form):
    """A bulk action on clients: what to do, and to whom (the rows ticked, or every client
    the list's filter matches, up to the highest id counted when it was confirmed)."""

    ACTIONS = {"set_tag": "Set the tag", "delete": "Delete"}
    SCOPES = {"selected": "The clients ticked", "matching": "Every client the filter matches"}

    action = forms.ChoiceField(label="Action", choices=list(ACTIONS.items()))
    tag = forms.CharField(
        label="Tag",
        required=False,
        max_length=INPUT_MAX_LENGTH,
        strip=False,
        help_text="For “Set the tag”; empty removes the tag.",
    )
    scope = forms.ChoiceField(
        label="Apply to", choices=list(SCOPES.items()), widget=forms.RadioSelect, initial="selected"
    )
    ids = IdsField(label="Clients", widget=forms.MultipleHiddenInput)
    query = forms.CharField(required=False, max_length=2000, widget=forms.HiddenInput)
    upto = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("scope") == "selected":
            if not data.get("ids"):
                self.add_error("ids", "Tick at least one client, or choose every matching one.")
            elif len(data["ids"]) > rules.UI_PAGE_MAX:
                self.add_error("ids", f"At most {rules.UI_PAGE_MAX} ticked clients at once.")
        return data
