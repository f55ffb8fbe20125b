"""The settings of the test run: production's (DEBUG off), given what a deployment sets.

Outside DEBUG the settings have no secrets and no identity provider of their own
(docs/security.md), so the run makes up a SECRET_KEY and names the development OIDC
client before ``project.settings`` reads the environment. Child processes the tests start
inherit the same environment.
"""

import os
import secrets

os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("OIDC_CLIENT_ID", "mailing-ui")
os.environ.setdefault("OIDC_ALLOWED_EMAIL_DOMAINS", "example.com")

from project.settings import *  # noqa: F403
