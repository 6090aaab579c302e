"""Layering: the rules layer (`hydraguard.policy`) is plain typed data that imports no runtime
module, and the decision core imports light (no Redis client, no mitmproxy, no GeoIP reader)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import hydraguard

PKG = Path(hydraguard.__file__).resolve().parent
POLICY = PKG / "policy"

HEAVY = ("redis", "cachetools", "mitmproxy", "maxminddb")
RUNTIME = ("hydraguard.budgets", "hydraguard.clusters", "hydraguard.signals")
# What policy/ may import from hydraguard outside policy/: the stdlib-only leaf.
POLICY_MAY_IMPORT = ("hydraguard.addresses",)
# Third-party packages policy/ may import (besides the standard library): plain data ones.
POLICY_THIRD_PARTY = ("yaml", "pycountry")

# Imports from policy/ into the runtime that are tolerated for a while (none today): keep this
# set empty; test_temporary_exemptions_still_needed fails when an entry is no longer used.
TEMPORARY: set[tuple[str, str]] = set()


def _loaded_after(stmt: str) -> set[str]:
    code = f"import sys\n{stmt}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    return set(out.stdout.split())


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _runtime_forbidden() -> tuple[str, ...]:
    if TEMPORARY:  # importing signals.iplists runs signals/__init__ (all of signals, stdlib only)
        return tuple(p for p in RUNTIME if p != "hydraguard.signals")
    return RUNTIME


@pytest.mark.parametrize("stmt", ["import hydraguard.decide", "import hydraguard.policy"])
def test_decision_core_imports_light(stmt: str) -> None:
    loaded = _loaded_after(stmt)
    heavy = sorted(m for m in loaded if _under(m, HEAVY))
    assert not heavy, f"{stmt} loads {heavy}"
    runtime = sorted(m for m in loaded if _under(m, _runtime_forbidden()))
    assert not runtime, f"{stmt} loads runtime modules {runtime}"


def test_budgets_package_loads_backends_on_first_use() -> None:
    loaded = _loaded_after("import hydraguard.budgets, hydraguard.budgets.spec")
    heavy = sorted(m for m in loaded if _under(m, HEAVY))
    assert not heavy, f"import hydraguard.budgets loads {heavy}"
    loaded = _loaded_after("from hydraguard.budgets import RedisBudgetState")
    assert "redis" in loaded


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in a policy/ source, nested ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = ["hydraguard", "policy"]
                base = ".".join(pkg[: len(pkg) - (node.level - 1)])
            else:
                base = ""
            if node.module:
                found.append((f"{base}.{node.module}" if base else node.module, node.lineno))
            else:  # `from .. import x`: x may be a module
                found += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return found


POLICY_FILES = sorted(POLICY.glob("*.py"))


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.name)
def test_policy_imports_nothing_outside_policy(path: Path) -> None:
    bad = []
    for name, line in _imports(path):
        top = name.split(".")[0]
        if top == "hydraguard":
            if _under(name, ("hydraguard.policy", *POLICY_MAY_IMPORT)):
                continue
            if (path.name, name) in TEMPORARY:
                continue
            bad.append(f"{path.name}:{line}: {name}")
        elif top != "__future__" and top not in sys.stdlib_module_names \
                and top not in POLICY_THIRD_PARTY:
            bad.append(f"{path.name}:{line}: {name} (third-party)")
    assert not bad, "policy/ must import only policy/*, stdlib, yaml, pycountry and " \
        "hydraguard.addresses: " \
        + "; ".join(bad)


def test_temporary_exemptions_still_needed() -> None:
    used = {(p.name, name) for p in POLICY_FILES for name, _ in _imports(p)}
    stale = TEMPORARY - used
    assert not stale, f"remove these from TEMPORARY in tests/test_layering.py: {sorted(stale)}"


def test_runtime_reexports_are_the_policy_types() -> None:
    from hydraguard import budgets, clusters
    from hydraguard.budgets import spec
    from hydraguard.policy import budget_model, catalogue
    from hydraguard.signals import prompts, proxy_headers

    assert budgets.WindowSpec is spec.WindowSpec is budget_model.WindowSpec
    assert clusters.LinkRule is budget_model.LinkRule
    assert prompts.DEFAULT_PATTERNS is catalogue.DEFAULT_PATTERNS
    assert proxy_headers.FORWARDING_HEADERS is catalogue.FORWARDING_HEADERS
    assert proxy_headers.PROXY_HEADERS is catalogue.PROXY_HEADERS


def _calls_named(name: str) -> dict[str, int]:
    """Runtime modules (relative path -> count) that call ``name(...)``."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "addon" / "hydraguard"
    found: dict[str, int] = {}
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        n = sum(1 for node in ast.walk(tree) if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name) and node.func.id == name)
        if n:
            found[str(path.relative_to(root))] = n
    return found


def test_only_gather_builds_facts():
    """What may write Facts? gather.py (the one place that assembles a request's facts)."""
    assert set(_calls_named("Facts")) == {"gather.py"}


def test_refusals_are_built_in_one_place():
    """Every Decision other than the default allow is built by refusals.py."""
    assert set(_calls_named("Decision")) == {"decision.py", "refusals.py"}


def test_proxy_never_loads_the_report_or_matplotlib() -> None:
    """`hydraguard report` draws with matplotlib; the proxy (addon, runner, command line) must
    not pay for it, and the report package loads matplotlib only when it draws."""
    loaded = _loaded_after("import hydraguard.addon, hydraguard.runner, hydraguard.cli, "
                           "hydraguard.webview")
    assert not sorted(m for m in loaded if _under(m, ("matplotlib", "PIL")))
    assert not sorted(m for m in loaded if _under(m, ("hydraguard.report",)))
    loaded = _loaded_after("import hydraguard.report, hydraguard.report.render")
    assert not sorted(m for m in loaded if _under(m, ("matplotlib",)))
