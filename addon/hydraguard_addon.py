"""Load hydraguard the usual mitmproxy way:

    mitmdump -s addon/hydraguard_addon.py --mode reverse:https://api.anthropic.com \
        --set hydraguard_rules=rules/default.yaml
"""

import sys
from pathlib import Path

_here = str(Path(__file__).resolve().parent)
if _here not in sys.path:  # works without `pip install` too
    sys.path.insert(0, _here)

from hydraguard.addon import HydraGuard  # noqa: E402

addons = [HydraGuard()]
