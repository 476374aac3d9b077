"""``python -m deploy.local up|down|status|env``: see deploy/local/__init__.py."""

import sys

from .cli import main

sys.exit(main())
