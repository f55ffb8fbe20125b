"""Development tools: stand-ins of the external services the product talks to.

Nothing here is product behaviour: ``devtools.provider`` is the stand-in of the send API,
``devtools/oidc`` the development identity provider (node). Tests, benchmarks and
``make run`` use them; production deployments run neither.
"""
