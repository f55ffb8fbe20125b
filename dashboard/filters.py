from __future__ import annotations

from datetime import timedelta

import django_filters
from django.db.models import QuerySet
from django.http import QueryDict
from django.utils import timezone

from dashboard.forms import INPUT_MAX_LENGTH
from mailing import selectors
from mailing.models import Client, Mailing, MailingStatus, Message, MessageStatus

PERIODS = {
    "day": ("Started in the last 24 hours", timedelta(days=1)),
    "week": ("Started in the last 7 days", timedelta(days=7)),
    "month": ("Started in the last 30 days", timedelta(days=30)),
}


class MailingFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=MailingStatus.choices, empty_label="Any status")
    period = django_filters.ChoiceFilter(
        label="Period",
        method="filter_period",
        empty_label="Any time",
        choices=[(key, label) for key, (label, _) in PERIODS.items()]
        + [("upcoming", "Not started yet")],
    )

    class Meta:
        model = Mailing
        fields = ["status", "period"]

    def filter_period(self, queryset, name, value):
        now = timezone.now()
        if value == "upcoming":
            return queryset.filter(start_at__gt=now)
        _, span = PERIODS[value]
        return queryset.filter(start_at__gte=now - span, start_at__lte=now)


class ClientFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(
        label="Search",
        method="search",
        max_length=INPUT_MAX_LENGTH,
        help_text="Any part of the phone in any notation, a tag, an operator code.",
    )
    operator_code = django_filters.ChoiceFilter(label="Operator code", empty_label="Any")
    tag = django_filters.ChoiceFilter(label="Tag", empty_label="Any")

    class Meta:
        model = Client
        fields = ["q", "operator_code", "tag"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.filters["operator_code"].extra["choices"] = [
            (c, c) for c in selectors.operator_code_choices()
        ]
        self.filters["tag"].extra["choices"] = [(t, t) for t in selectors.tag_choices()]

    def search(self, queryset, name, value):
        return queryset.filter(selectors.client_search(value))


FILTER_FIELDS = ("q", "operator_code", "tag")


def filtered_clients(query: QueryDict) -> tuple[ClientFilter, QuerySet[Client]]:
    """The list's filter and the clients it matches (none while the filter is invalid:
    an invalid field must not silently widen the set)."""
    filterset = ClientFilter(query, queryset=Client.objects.all())
    clients = filterset.qs if filterset.is_valid() else Client.objects.none()
    return filterset, clients


def filter_query(query: QueryDict) -> str:
    """The filter's part of a query string (no page, sort or page size)."""
    kept = QueryDict(mutable=True)
    for name in FILTER_FIELDS:
        value = query.get(name)
        if value:
            kept[name] = value
    return kept.urlencode()


class MessageFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=MessageStatus.choices, empty_label="Any status")

    class Meta:
        model = Message
        fields = ["status"]
