"""`hydraguard run`: mitmdump with the hydraguard addon and without the mitmproxy addons a
reverse proxy in front of a model API never uses.

Dropped: interactive and traffic-rewriting features (map/modify/replay, sticky cookies and auth,
the mitm.it onboarding app, anticache/anticomp, HAR export, browser, cut/export/comment).
Each of them is called on every request even when switched off, and the onboarding app would
answer requests for mitm.it. `mitmdump -s addon/hydraguard_addon.py` keeps the full set.
"""

from __future__ import annotations

from collections.abc import Sequence

from mitmproxy import addons, master
from mitmproxy.addonmanager import Loader
from mitmproxy.addons import dumper, errorcheck, keepserving, readfile

UNUSED_ADDONS = frozenset({
    "Browser", "BlockList", "AntiCache", "AntiComp", "ClientPlayback", "CommandHistory",
    "Comment", "Cut", "Export", "Onboarding", "ServerPlayback", "MapRemote", "MapLocal",
    "ModifyBody", "ModifyHeaders", "StickyAuth", "StickyCookie", "SaveHar", "UpstreamAuth",
})


class HydraguardMaster(master.Master):
    """mitmproxy's DumpMaster (tools/dump.py) with the same addons minus UNUSED_ADDONS."""

    def __init__(self, options, loop=None) -> None:
        super().__init__(options, event_loop=loop, with_termlog=True)
        keep, drop = [], []
        for a in addons.default_addons():
            (drop if type(a).__name__ in UNUSED_ADDONS else keep).append(a)
        loader = Loader(self)
        for a in drop:  # keep their options (mitmdump's command line refers to them)
            if hasattr(a, "load"):
                a.load(loader)
        self.addons.add(*keep)
        self.addons.add(dumper.Dumper(), keepserving.KeepServing(), readfile.ReadFileStdin(),
                        errorcheck.ErrorCheck())


def run_mitmdump(args: Sequence[str]) -> None:
    """Parse mitmdump-style `args` and run until stopped."""
    from mitmproxy.tools import cmdline
    from mitmproxy.tools.main import run

    run(HydraguardMaster, cmdline.mitmdump, list(args))


if __name__ == "__main__":  # `python -m hydraguard.runner ARGS`: the lean mitmdump, no addon
    import sys

    run_mitmdump(sys.argv[1:])
