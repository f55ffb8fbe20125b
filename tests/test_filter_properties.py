"""Property tests: the audience filter and the fan-out agree with the rule in PRODUCT.md."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailing.engine.fanout import fan_out
from mailing.models import Client, Mailing, MailingStatus, Message
from mailing.selectors import matching_clients

CODES = ["900", "903", "916", "926"]
TAGS = ["", "vip", "new", "Vip", "vip "]

client_rows = st.lists(
    st.tuples(st.sampled_from(CODES), st.sampled_from(TAGS)), min_size=0, max_size=25
)
code_filters = st.lists(st.sampled_from([*CODES, "999"]), max_size=3, unique=True)
tag_filters = st.lists(st.sampled_from([*TAGS, "absent"]), max_size=3, unique=True)


class Rollback(Exception):
    """Undo one example's rows, so examples do not see each other."""


def expected_matches(rows, codes, tags) -> set[int]:
    """The rule, spelled out: code listed (or no codes) AND tag listed (or no tags)."""
    return {
        index
        for index, (code, tag) in enumerate(rows)
        if (not codes or code in codes) and (not tags or tag in tags)
    }


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=client_rows, codes=code_filters, tags=tag_filters)
def test_matching_and_fan_out_follow_the_rule(rows, codes, tags):
    try:
        with transaction.atomic():
            clients = Client.objects.bulk_create(
                Client(phone=f"7{code}{n:07d}", operator_code=code, tag=tag, timezone="UTC")
                for n, (code, tag) in enumerate(rows)
            )
            by_index = {n: client.pk for n, client in enumerate(clients)}
            expected = {by_index[n] for n in expected_matches(rows, codes, tags)}

            assert set(matching_clients(codes, tags).values_list("pk", flat=True)) == expected

            now = timezone.now()
            mailing = Mailing.objects.create(
                name="Filter rule",
                start_at=now,
                end_at=now + timedelta(hours=1),
                text="x",
                operator_codes=codes,
                tags=tags,
                status=MailingStatus.RUNNING,
            )
            assert fan_out(mailing, now) == len(expected)
            assert fan_out(mailing, now) == 0
            created = set(
                Message.objects.filter(mailing=mailing).values_list("client_id", flat=True)
            )
            assert created == expected
            mailing.refresh_from_db()
            assert mailing.total == mailing.pending == len(expected)
            raise Rollback
    except Rollback:
        pass
