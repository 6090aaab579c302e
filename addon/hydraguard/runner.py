"""`hydraguard run`: mitmdump with the hydraguard addon and without the mitmproxy addons a
reverse proxy in front of a model API never uses.

Dropped: interactive and traffic-rewriting features (map/modify/replay, sticky cookies and auth,
the mitm.it onboarding app, anticache/anticomp, HAR export, browser, cut/export/comment).
Each of them is called on every request even when switched off, and the onboarding app would
answer requests for mitm.it. `mitmdump -s addon/hydraguard_addon.py` keeps the full set.
"""

from __future__ import annotations

import gc
import logging
import re
import sys
from collections.abc import Sequence

from mitmproxy import addons, master
from mitmproxy.addonmanager import Loader
from mitmproxy.addons import dumper, errorcheck, keepserving, readfile
from mitmproxy.exceptions import OptionsError

UNUSED_ADDONS = frozenset({
    "Browser", "BlockList", "AntiCache", "AntiComp", "ClientPlayback", "CommandHistory",
    "Comment", "Cut", "Export", "Onboarding", "ServerPlayback", "MapRemote", "MapLocal",
    "ModifyBody", "ModifyHeaders", "StickyAuth", "StickyCookie", "SaveHar", "UpstreamAuth",
})


CONFIG_ERROR = 2  # exit status of every configuration error (as `hydraguard run` itself)


def _one_line(record: logging.LogRecord) -> str:
    """The gist of an error record: its first line, or its exception's (e.g. an addon's
    OptionsError), without mitmproxy's hints about mitmdump flags or a traceback."""
    exc = record.exc_info[1] if record.exc_info else None
    text = str(exc) if isinstance(exc, OptionsError) else record.getMessage()
    line = text.strip().splitlines()[0] if text.strip() else "error"
    line = re.sub(r"^\[Errno \d+\] ", "", line)
    return line if line.startswith("hydraguard:") else f"hydraguard: {line}"


class StartupCheck(errorcheck.ErrorCheck):
    """mitmproxy's ErrorCheck, hydraguard style: an error logged while starting (a port in
    use, a file that does not open) is printed as one line and exits with status 2. The
    terminal log holds such errors back until the start is over (see HydraguardMaster)."""

    name = "errorcheck"  # the master looks its error check up by this name
    starting = True

    async def shutdown_if_errored(self) -> None:
        import asyncio

        await asyncio.sleep(0)  # let pending log records arrive
        if self.logger.has_errored:
            seen: list[str] = []
            for r in self.logger.has_errored:
                line = _one_line(r)
                if line not in seen:
                    seen.append(line)
            print("\n".join(seen), file=sys.stderr, flush=True)
            sys.exit(CONFIG_ERROR)

    def finish(self) -> None:
        self.starting = False
        super().finish()
        tune_gc()


GC_THRESHOLDS = (5000, 20, 10)  # CPython's defaults: (700, 10, 10)


def tune_gc() -> None:
    """Once started: what start-up loaded (modules, rules, GeoIP tables) is moved out of the
    cyclic collector's sight (`gc.freeze`), and the young generation is collected every 5,000
    net allocations instead of 700, so the objects of requests in flight are promoted (and
    then walked by full collections) less often. bench/run.py, realistic cell, default rules:
    GC time 8.3 % -> 4.1 % of the proxy's CPU."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class HydraguardMaster(master.Master):
    """mitmproxy's DumpMaster (tools/dump.py) with the same addons minus UNUSED_ADDONS."""

    def __init__(self, options, loop=None) -> None:
        super().__init__(options, event_loop=loop, with_termlog=True)
        check = StartupCheck()
        if self._termlog_addon is not None:  # errors while starting: StartupCheck says them
            self._termlog_addon.logger.addFilter(
                lambda r: not (check.starting and r.levelno >= logging.ERROR))
        keep, drop = [], []
        for a in addons.default_addons():
            (drop if type(a).__name__ in UNUSED_ADDONS else keep).append(a)
        loader = Loader(self)
        for a in drop:  # keep their options (mitmdump's command line refers to them)
            if hasattr(a, "load"):
                a.load(loader)
        self.addons.add(*keep)
        self.addons.add(dumper.Dumper(), keepserving.KeepServing(), readfile.ReadFileStdin(),
                        check)


def run_mitmdump(args: Sequence[str]) -> int:
    """Parse mitmdump-style `args` and run until stopped. The exit status: 0 after a normal
    stop, CONFIG_ERROR when mitmproxy refused to start (its own exit status 1: a bad
    argument or option after `--`)."""
    from mitmproxy.tools import cmdline

    return _run(HydraguardMaster, cmdline.mitmdump, args)


def _run(master_cls, make_parser, args: Sequence[str]) -> int:
    """mitmproxy's `run` with our exit statuses (see `run_mitmdump`)."""
    from mitmproxy.tools.main import run

    try:
        run(master_cls, make_parser, list(args))
    except SystemExit as e:
        if e.code == 1:
            return CONFIG_ERROR
        raise
    return 0


WEB_COLUMNS = "tls,icon,path,method,status,size,time,comment"


def web_args(host: str, port: int) -> list[str]:
    """mitmweb options of `hydraguard run --web`: the UI on ``host:port`` (loopback unless
    told otherwise), no browser started, the flow list with the decision (comment) column."""
    return ["--set", f"web_host={host}", "--set", f"web_port={port}",
            "--set", "web_open_browser=false", "--set", f"web_columns={WEB_COLUMNS}"]


def run_web(web: str, args: list[str], n_extra: int) -> int:
    """`hydraguard run --web [HOST:]PORT`: check the UI address, then `run_mitmweb` with the
    web options put before the last ``n_extra`` arguments (the user's, after --)."""
    from .startup import ConfigError, check_port, parse_listen

    try:
        host, port = parse_listen(web)
        check_port(host, port)
    except ConfigError as e:
        print(f"hydraguard: {str(e).replace('--listen', '--web')}", file=sys.stderr)
        return CONFIG_ERROR
    n = len(args) - n_extra
    return run_mitmweb(args[:n] + web_args(host, port) + args[n:])


def run_mitmweb(args: Sequence[str]) -> int:
    """As `run_mitmdump`, with mitmweb's master: the same proxy and addon, plus the web UI
    (its address and access token are printed on stderr once it listens)."""
    from mitmproxy.tools import cmdline
    from mitmproxy.tools.web.master import WebMaster

    class HydraguardWebMaster(WebMaster):
        """mitmweb's master; says where its UI is (mitmproxy logs that at info level, which
        `hydraguard run` keeps quiet)."""

        async def running(self) -> None:
            await super().running()  # the web server listens, the addons ran `running`
            print(f"hydraguard: mitmweb UI at {self.web_url} (flows show their decision; "
                  "API key headers masked)", file=sys.stderr, flush=True)

    return _run(HydraguardWebMaster, cmdline.mitmweb, args)


if __name__ == "__main__":  # `python -m hydraguard.runner ARGS`: the lean mitmdump, no addon
    sys.exit(run_mitmdump(sys.argv[1:]))
