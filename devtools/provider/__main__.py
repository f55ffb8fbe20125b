"""``python -m devtools.provider --help``: the stand-in of the send API, without Django."""

import sys

from devtools.provider.cli import main

sys.exit(main())
