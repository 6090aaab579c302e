"""Load hydraguard the usual mitmproxy way:

    mitmdump -s addon/hydraguard_addon.py --mode reverse:https://api.anthropic.com \
        --set hydraguard_rules=rules/default.yaml

Under mitmweb or the mitmproxy console (`mitmweb -s addon/hydraguard_addon.py ...`, or
`hydraguard run --web`) it also loads `FlowNotes`: each flow's decision as its comment,
refusals marked, API key headers masked in the UI (hydraguard/webview.py).
"""

import sys
from pathlib import Path

_here = str(Path(__file__).resolve().parent)
if _here not in sys.path:  # works without `pip install` too
    sys.path.insert(0, _here)

from hydraguard.addon import HydraGuard  # noqa: E402

addons: list = [HydraGuard()]
if any(m in sys.modules for m in ("mitmproxy.tools.web.master",
                                  "mitmproxy.tools.console.master")):
    from hydraguard.webview import FlowNotes

    addons.append(FlowNotes())  # after HydraGuard: it reads the decision HydraGuard made
