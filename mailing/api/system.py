"""``/stats`` (every mailing's counts and the totals) and ``/provider`` (send API health)."""

from django.http import HttpRequest, JsonResponse
from ninja import Router

from mailing import selectors
from mailing.api.responses import responses
from mailing.api.schemas.stats import OverallStatsOut, ProviderHealthOut

router = Router(tags=["statistics"])


@router.get("/stats", response=responses({200: OverallStatsOut}))
def overall_stats(request: HttpRequest) -> JsonResponse:
    """Every mailing with its counts by status, the totals, and mailings per status."""
    # Thousands of mailings: the plain rows are serialised as they are. Validating them
    # object by object against OverallStatsOut was most of the request's time
    # (docs/benchmarks.md); the schemathesis tests check the answer against the schema.
    return JsonResponse(selectors.overall_stats())


@router.get("/provider", response=responses({200: ProviderHealthOut}))
def provider_health(request: HttpRequest) -> selectors.ProviderHealth:
    """The send API as the workers see it: whether it refused our credentials (sending is
    paused until PROBE_TOKEN works again) and each dispatcher's circuit and heartbeat."""
    return selectors.provider_health()
