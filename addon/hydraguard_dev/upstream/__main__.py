"""``python -m hydraguard_dev.upstream --port 0 --port-file PATH``: run the stand-in upstream."""

import sys

from .server import main

sys.exit(main())
