"""Command line: `hydraguard run | demo | check | hash-key`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .policy import PolicyError, load_policy

ADDON_SCRIPT = Path(__file__).resolve().parent.parent / "hydraguard_addon.py"
DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules" / "default.yaml"


def _split_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def mitmdump_args(upstream: str, rules: str, listen: tuple[str, int], *,
                  log_path: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The mitmdump command line that `hydraguard run` uses (production options)."""
    host, port = listen
    args = [
        "--mode", f"reverse:{upstream}",
        "--listen-host", host, "--listen-port", str(port),
        "-s", str(ADDON_SCRIPT),
        "--set", f"hydraguard_rules={rules}",
        "--set", "block_global=false",          # clients come from public addresses
        "--set", "connection_strategy=lazy",    # no upstream connection for denied requests
        "--set", "flow_detail=0",               # quiet: the decision log is the record
        "--set", "termlog_verbosity=warn",
        "--set", "keep_host_header=false",
    ]
    if log_path:
        args += ["--set", f"hydraguard_log={log_path}"]
    return args + (extra or [])


def cmd_run(a: argparse.Namespace) -> int:
    rules = a.rules or str(DEFAULT_RULES)
    try:
        policy = load_policy(rules)
    except PolicyError as e:
        print(f"hydraguard: invalid rules, not starting:\n{e}", file=sys.stderr)
        return 2
    try:
        from .pipeline import open_geo

        geo = open_geo(policy)
        if geo is not None:
            geo.close()
    except Exception as e:  # GeoDatabaseError, OSError: say which file and stop
        print(f"hydraguard: cannot open GeoIP databases, not starting: {e}", file=sys.stderr)
        return 2
    body_limit = policy.settings.max_body_bytes * 2
    extra = ["--set", f"body_size_limit={body_limit}"]
    if a.certs:
        extra += ["--certs", f"*={a.certs}"]
    args = mitmdump_args(a.upstream, rules, a.listen, log_path=a.log, extra=extra + a.mitm_args)
    from mitmproxy.tools.main import mitmdump

    mitmdump(args)
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    bad = 0
    for path in a.paths:
        try:
            policy = load_policy(path)
        except PolicyError as e:
            print(e)
            print(f"{path}: {len(e.issues)} error(s)")
            bad += 1
            continue
        print(f"{path}: ok, {len(policy.rules)} rule(s)")
    return 1 if bad else 0


def cmd_hash_key(a: argparse.Namespace) -> int:
    from .identity import account_id
    from .pipeline import DEMO_SECRET

    secret = os.environ.get(a.secret_env, "").encode() or DEMO_SECRET
    key = sys.stdin.readline().strip() if a.key == "-" else a.key
    print(account_id(secret, key))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hydraguard", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="start the reverse proxy")
    r.add_argument("--upstream", required=True, help="model API base URL, e.g. "
                   "https://api.anthropic.com")
    r.add_argument("--rules", help="rules YAML (default: shipped rules/default.yaml)")
    r.add_argument("--listen", type=_split_listen, default=("127.0.0.1", 8080),
                   help="HOST:PORT to listen on (default 127.0.0.1:8080)")
    r.add_argument("--log", help="decision log path ('-' for stdout); overrides the rules")
    r.add_argument("--certs", help="PEM file with certificate and key: listen with TLS")
    r.add_argument("mitm_args", nargs="*", help="extra mitmdump arguments after --")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("check", help="validate rules files")
    c.add_argument("paths", nargs="+")
    c.set_defaults(func=cmd_check)
    h = sub.add_parser("hash-key", help="print the account hash of an API key ('-': stdin)")
    h.add_argument("key")
    h.add_argument("--secret-env", default="HYDRAGUARD_ACCOUNT_SECRET")
    h.set_defaults(func=cmd_hash_key)
    d = sub.add_parser("demo", help="stand-in upstream + proxy + scripted traffic, offline")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
