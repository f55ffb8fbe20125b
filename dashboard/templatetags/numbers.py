"""Numbers as people read them."""

from __future__ import annotations

from django import template

from mailing import rules

register = template.Library()


@register.filter
def percent(share: float | None) -> str:
    """A share of 0 to 1 as "12.5%" (empty when there is none)."""
    if share is None:
        return ""
    return f"{rules.percent(share):g}%"


@register.filter
def thousands(number: int | None) -> str:
    """A count with thousands separators: 158876 as "158,876"."""
    if number is None:
        return ""
    return f"{number:,}"
