"""The staff UI: server-rendered pages and HTMX partials over mailing.services/selectors,
one module per page (``dashboard/urls.py`` maps each URL name to its view)."""
