"""The image's health check: exit 0 when a URL answers 200 within 4 s, else 1.

``python deploy/healthcheck.py [URL]``; the default is the web app's ``/healthz`` on the port
gunicorn binds (``PORT``, default 8000). Standard library only, so it costs no Django start.
"""

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    url = argv[0] if argv else f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - loopback
            return 0 if response.status == 200 else 1
    except (OSError, urllib.error.URLError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
