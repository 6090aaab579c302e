"""Command line: `hydraguard run | health | clusters | demo | check | explain | test | replay |
report | hash-key`.

Every configuration error exits with status 2 and says what is wrong in one line (invalid
rules: one line per error, with file:line:column)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .authoring.commands import cmd_check, cmd_explain, cmd_replay, cmd_test
from .policy import PolicyError, load_policy

ADDON_SCRIPT = Path(__file__).resolve().parent.parent / "hydraguard_addon.py"
DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules" / "default.yaml"


def mitmdump_args(upstream: str, rules: str, listen: tuple[str, int], *,
                  log_path: str | None = None, status_path: str | None = None,
                  extra: list[str] | None = None) -> list[str]:
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
    if status_path:
        args += ["--set", f"hydraguard_status={status_path}"]
    return args + (extra or [])


def _preflight(a: argparse.Namespace, rules: str) -> tuple[list[str], int]:
    """Check everything `hydraguard run` can check before mitmdump starts: the mitmdump
    arguments, or ([], 2) after printing what is wrong."""
    from .startup import ConfigError, check_log, check_port, parse_listen, parse_upstream
    from .status import check_writable, default_status_path

    try:
        upstream = parse_upstream(a.upstream)
        host, port = parse_listen(a.listen)
    except ConfigError as e:
        print(f"hydraguard: {e}", file=sys.stderr)
        return [], 2
    try:
        policy = load_policy([p.strip() for p in rules.split(",") if p.strip()])
    except PolicyError as e:
        print(f"hydraguard: invalid rules, not starting:\n{e}", file=sys.stderr)
        return [], 2
    geo_notes = _check_geo(policy)
    if geo_notes is None:
        return [], 2
    b = policy.budgets
    if b is not None and b.budgets:
        from .budgets.backends import open_state

        try:  # builds the client only (no connection yet): a bad URL, e.g. from $REDIS_URL
            open_state(b.state, time.time)
        except ValueError as e:
            print(f"hydraguard: unusable budget state settings, not starting: {e}",
                  file=sys.stderr)
            return [], 2
    status_path = a.status or (default_status_path(port) if port else "")
    try:
        check_log(a.log or policy.log.path)
        if a.status != "off" and status_path and (why := check_writable(status_path)):
            raise ConfigError(f"cannot write the status file {status_path}: {why}")
        if a.certs and not os.path.isfile(a.certs):
            raise ConfigError(f"--certs {a.certs}: no such file")
        check_port(host, port)
        admin = None
        if a.admin:
            from .admin.listener import DEFAULT_TOKEN_ENV, check_admin

            admin = check_admin(a.admin, (host, port), os.environ.get(DEFAULT_TOKEN_ENV))
            check_port(*admin)
    except ConfigError as e:
        print(f"hydraguard: {e}", file=sys.stderr)
        return [], 2
    for w in geo_notes:  # only once the configuration is known to be usable
        print(f"hydraguard: WARNING: {w}", file=sys.stderr)
    s = policy.settings  # mitmproxy's hard cap: above every cap the proxy answers itself
    limit = max(s.max_body_bytes * 2, s.max_batch_body_bytes, s.max_upload_bytes)
    extra = ["--set", f"body_size_limit={limit}"]
    if admin is not None:
        ahost, aport = admin
        extra += ["--set", f"hydraguard_admin=[{ahost}]:{aport}" if ":" in ahost
                  else f"hydraguard_admin={ahost}:{aport}"]
    if a.certs:
        extra += ["--certs", f"*={a.certs}"]
    return mitmdump_args(upstream, rules, (host, port), log_path=a.log,
                         status_path=status_path, extra=extra + a.mitm_args), 0


def cmd_run(a: argparse.Namespace) -> int:
    args, rc = _preflight(a, a.rules or str(DEFAULT_RULES))
    if rc:
        return rc
    if a.web is not None:  # mitmweb instead of mitmdump
        from .runner import run_web

        return run_web(a.web, args, len(a.mitm_args))
    from .runner import run_mitmdump

    return run_mitmdump(args)


def cmd_health(a: argparse.Namespace) -> int:
    """Print the running proxy's status file (exit 0 ok, 1 degraded, 2 none, 3 stale)."""
    import json

    from .status import default_status_path, read_status, render

    path = a.status or default_status_path(a.port)
    try:
        data, age = read_status(path)
    except (OSError, ValueError) as e:
        why = "no such file" if isinstance(e, FileNotFoundError) else e
        print(f"hydraguard health: no status at {path} ({why}): is the proxy running "
              "there? (--port N or --status PATH)", file=sys.stderr)
        return 2
    lines, rc = render(data, age)
    if a.json:
        print(json.dumps({**data, "age_s": round(age, 1), "stale": rc == 3}, indent=2))
    else:
        print("\n".join(lines))
    return rc


def cmd_clusters(a: argparse.Namespace) -> int:
    """Print a running proxy's linked clusters (its admin listener's GET /clusters)."""
    from .admin.client import AdminClientError, show_clusters

    try:
        print(show_clusters(a.admin, a.top, as_json=a.json))
    except AdminClientError as e:
        print(f"hydraguard clusters: {e}", file=sys.stderr)
        return 2
    return 0


def _check_geo(policy: object) -> list[str] | None:
    """Open and structure-check the GeoIP databases before mitmdump starts (the addon then
    reuses the result). The warnings to show (demo data, stale files: each database's build
    date is on the startup line); None: a database is unusable (said on stderr)."""
    from .geo.notices import geo_warnings, not_shown_yet
    from .pipeline import open_geo

    try:
        geo = open_geo(policy)  # type: ignore[arg-type]
    except Exception as e:  # GeoDatabaseError, OSError: say which file and stop
        print(f"hydraguard: cannot open GeoIP databases, not starting: {e}", file=sys.stderr)
        return None
    if geo is None:
        return []
    try:
        return not_shown_yet(geo_warnings(policy, geo))  # type: ignore[arg-type]
    finally:
        geo.close()


def cmd_hash_key(a: argparse.Namespace) -> int:
    from .identity import account_id
    from .pipeline import DEMO_SECRET

    secret = os.environ.get(a.secret_env, "").encode() or DEMO_SECRET
    key = sys.stdin.readline().strip() if a.key == "-" else a.key
    print(account_id(secret, key))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from hydraguard_dev.demo import run_demo  # development tools: imported only here

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hydraguard", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="start the reverse proxy")
    r.add_argument("--upstream", required=True, help="model API base URL, e.g. "
                   "https://api.anthropic.com")
    r.add_argument("--rules", help="rules YAML (default: shipped rules/default.yaml)")
    r.add_argument("--listen", default="127.0.0.1:8080",
                   help="PORT or HOST:PORT to listen on (default 127.0.0.1:8080; a port "
                   "alone listens on 127.0.0.1; all interfaces: 0.0.0.0:PORT)")
    r.add_argument("--log", help="decision log path ('-' for stdout); overrides the rules")
    r.add_argument("--status", help="status file for `hydraguard health` (default "
                   "<temp dir>/hydraguard-<port>.status.json; 'off': none)")
    r.add_argument("--certs", help="PEM file with certificate and key: listen with TLS")
    r.add_argument("--admin", help="admin listener (metrics, clusters, overrides): PORT "
                   "(127.0.0.1) or HOST:PORT; beyond loopback only with $HYDRAGUARD_ADMIN_TOKEN")
    r.add_argument("--web", nargs="?", const="127.0.0.1:8081", metavar="[HOST:]PORT",
                   help="run mitmweb instead of mitmdump: its UI lists each flow with its "
                   "decision, refusals marked, API keys masked (default 127.0.0.1:8081; a "
                   "port alone listens on 127.0.0.1); the UI address with its token is "
                   "printed on stderr")
    r.add_argument("mitm_args", nargs="*", help="extra mitmdump arguments after --")
    r.set_defaults(func=cmd_run)
    hl = sub.add_parser("health", help="status of a running proxy (rules version, last "
                        "rejected change, GeoIP databases, state backend); exit 0 ok, "
                        "1 degraded, 2 no status file, 3 stale")
    hl.add_argument("--port", type=int, default=8080, help="the port the proxy listens on "
                    "(finds its default status file; default 8080)")
    hl.add_argument("--status", help="the status file (as given to `hydraguard run --status`)")
    hl.add_argument("--json", action="store_true", help="the status document as JSON")
    hl.set_defaults(func=cmd_health)
    cl = sub.add_parser("clusters", help="linked clusters of a running proxy, by tokens "
                        "charged (its admin listener; token from $HYDRAGUARD_ADMIN_TOKEN)")
    cl.add_argument("--admin", default="http://127.0.0.1:9901", help="the admin listener's "
                    "URL (default http://127.0.0.1:9901)")
    cl.add_argument("--top", type=int, default=20, help="how many clusters (default 20)")
    cl.add_argument("--json", action="store_true", help="the document as JSON")
    cl.set_defaults(func=cmd_clusters)
    c = sub.add_parser("check", help="validate rules files/folders; summary; exit 1 on errors")
    c.add_argument("paths", nargs="+", help="rules files or folders (each checked on its own)")
    c.add_argument("--strict", action="store_true", help="warnings count as errors (exit 1)")
    c.set_defaults(func=cmd_check)
    e = sub.add_parser("explain", help="decide one request offline and show why")
    e.add_argument("--rules", action="append", help="rules file or folder (repeatable; "
                   "default: shipped rules/default.yaml)")
    e.add_argument("--ip", help="address the request comes from (TCP peer)")
    e.add_argument("--method")
    e.add_argument("--path", help="request path (default /v1/messages)")
    e.add_argument("--key", help="API key (hashed into the account)")
    e.add_argument("--model")
    e.add_argument("--prompt")
    e.add_argument("--max-tokens", type=int, dest="max_tokens")
    e.add_argument("--stream", action="store_true")
    e.add_argument("--header", action="append", help="'name: value' (repeatable)")
    e.add_argument("--signal", action="append", help="name=value signal to set (repeatable)")
    e.add_argument("--body-file", help="request body to send as is")
    e.add_argument("--facts-json", help="JSON object with the request fields (ip, path, key, "
                   "model, stream, headers, body, signals, ...); options override it")
    e.add_argument("--json", action="store_true", help="machine-readable output")
    e.set_defaults(func=cmd_explain)
    t = sub.add_parser("test", help="run policy tests (YAML cases)")
    t.add_argument("paths", nargs="+", help="test files, rules files (their tests/ are "
                   "searched) or folders")
    t.add_argument("--rules", action="append", help="test these rules instead of the "
                   "files' own `rules:`")
    t.set_defaults(func=cmd_test)
    rp = sub.add_parser("replay", help="re-decide a decision log under new rules")
    rp.add_argument("log", help="decision log (JSON lines; '-': stdin)")
    rp.add_argument("--rules", action="append", required=True, help="the new rules")
    rp.add_argument("--examples", type=int, default=3, help="examples per change (default 3)")
    rp.add_argument("--relookup-geo", action="store_true",
                    help="look client IPs up in the new rules' GeoIP databases")
    rp.add_argument("--budgets", action="store_true",
                    help="also re-run linking, probation and budgets (in-memory, log order)")
    rp.add_argument("--top", type=int, default=10, help="clusters shown with --budgets")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_replay)
    from .report.command import add_parser as add_report

    add_report(sub)
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
