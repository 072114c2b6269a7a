"""``python -m ssl_viz``: see ssl_viz.cli."""

import sys

from ssl_viz.cli import main

sys.exit(main())
