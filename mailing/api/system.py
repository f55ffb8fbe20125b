"""``/stats`` (every mailing's counts and the totals) and ``/provider`` (send API health)."""

from django.http import HttpRequest
from ninja import Router

from mailing import selectors
from mailing.api.responses import responses
from mailing.api.schemas import OverallStatsOut, ProviderHealthOut

router = Router(tags=["statistics"])


@router.get("/stats", response=responses({200: OverallStatsOut}))
def overall_stats(request: HttpRequest) -> dict[str, object]:
    """Every mailing with its counts by status, the totals, and mailings per status."""
    return selectors.overall_stats()


@router.get("/provider", response=responses({200: ProviderHealthOut}))
def provider_health(request: HttpRequest) -> dict[str, object]:
    """The send API as the workers see it: whether it refused our credentials (sending is
    paused until PROBE_TOKEN works again) and each dispatcher's circuit and heartbeat."""
    return selectors.provider_health()
