"""Management commands that read and write through selectors and services."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from mailing import services
from mailing.engine import lifecycle
from mailing.management.commands.run_stack import TOKEN_NAME
from mailing.management.commands.run_stack import Command as RunStack
from mailing.models import ApiToken, Mailing, Message, MessageStatus
from mailing.tokens import authenticate_key
from tests.conftest import make_clients

pytestmark = pytest.mark.django_db


def running_mailing() -> Mailing:
    now = timezone.now()
    return services.create_mailing(
        start_at=now - timedelta(seconds=1), end_at=now + timedelta(minutes=1), text="Hello"
    )


def test_reconcile_counters_checks_every_mailing_and_corrects_the_drifted_one():
    make_clients(3)
    kept, drifted = running_mailing(), running_mailing()
    lifecycle.tick(timezone.now())  # fans both out: three pending messages each
    # Drift made on purpose, as a manual fix in SQL would: counters still say pending.
    drifted_rows = Message.objects.filter(mailing=drifted).values("pk")[:2]
    Message.objects.filter(pk__in=drifted_rows).update(status=MessageStatus.SENT)
    out = io.StringIO()
    call_command("reconcile_counters", stdout=out)
    assert out.getvalue().splitlines() == [
        f"mailing {drifted.pk}: corrected {{'pending': -2, 'sent': 2}}",
        "2 mailings checked, 1 corrected",
    ]
    out = io.StringIO()
    call_command("reconcile_counters", "--mailing", str(kept.pk), stdout=out)
    assert out.getvalue().splitlines() == ["1 mailings checked, 0 corrected"]


def test_demo_data_makes_one_staff_user_without_a_password():
    out = io.StringIO()
    call_command("load_demo_data", clients=2, stdout=out)
    call_command("load_demo_data", clients=2, stdout=out)
    (user,) = get_user_model().objects.all()
    assert (user.username, user.email, user.is_staff) == ("demo", "demo@example.com", True)
    assert not user.has_usable_password()
    assert out.getvalue().splitlines()[-1] == "Demo data: 2 clients; staff user 'demo'."


def test_run_stack_gives_the_demo_user_a_fresh_token_and_revokes_the_last():
    assert RunStack()._demo_token() is None  # no demo user yet
    call_command("load_demo_data", clients=0, stdout=io.StringIO())
    first = RunStack()._demo_token()
    second = RunStack()._demo_token()
    assert first and second and first != second
    assert authenticate_key(first) is None
    assert authenticate_key(second) is not None
    live = ApiToken.objects.filter(name=TOKEN_NAME, revoked_at__isnull=True)
    assert live.count() == 1
