"""Who a mailing may text: the filter's clients less the phones that opted out.

``not_opted_out()`` is a condition on any queryset with a ``phone`` column (clients,
messages): a NOT EXISTS against the opt-out table's unique phone index, so a fan-out's
INSERT ... SELECT or a resend excludes opted-out phones in the same statement.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q

from mailing.models import OptOut


def opted_out() -> Exists:
    """True for a row whose ``phone`` opted out."""
    return Exists(OptOut.objects.filter(phone=OuterRef("phone")))


def not_opted_out() -> Q:
    """The condition that keeps only rows whose ``phone`` may be texted."""
    return ~Q(opted_out())
