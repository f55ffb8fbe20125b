"""Operations: what the service offers to those who run it, in one place.

- ``health``: ``/healthz`` (database and broker);
- ``metrics``: Prometheus counters and the scrape-time database gauges, ``/metrics``,
  ``manage.py serve_metrics`` for worker pods;
- ``logging``: structured log lines (text or JSON) carrying the ids they are about, the
  request id of each HTTP request;
- ``security``: the Content-Security-Policy, the sign-in rate limit, the sign-in page when
  the identity provider is unreachable.
"""
