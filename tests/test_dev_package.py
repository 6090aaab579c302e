"""The development tools (hydraguard_dev) stay out of the runtime: nothing in hydraguard loads
them except `hydraguard demo`, which imports them when it runs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import hydraguard

RUNTIME = Path(hydraguard.__file__).parent


def test_runtime_imports_do_not_load_hydraguard_dev() -> None:
    code = (
        "import json, sys\n"
        "import hydraguard.cli, hydraguard.pipeline, hydraguard.addon\n"
        "hydraguard.cli.build_parser().parse_args(['demo'])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('hydraguard'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    loaded = json.loads(out.stdout)
    assert "hydraguard.pipeline" in loaded and "hydraguard.cli" in loaded
    assert [m for m in loaded if m.split(".")[0] == "hydraguard_dev"] == []


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Modules imported by statements that run at import time (not inside a def)."""
    names: list[str] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo += list(ast.iter_child_nodes(node))
    return names


def test_no_runtime_module_imports_hydraguard_dev_at_module_level() -> None:
    offenders = [
        str(p.relative_to(RUNTIME))
        for p in sorted(RUNTIME.rglob("*.py"))
        if any(n.split(".")[0] == "hydraguard_dev"
               for n in _module_level_imports(ast.parse(p.read_text())))
    ]
    assert offenders == []


def test_demo_entry_point_resolves() -> None:
    """What `hydraguard demo` imports lazily exists, and the demo's rules file is found."""
    from hydraguard_dev.demo import DEMO_RULES, run_demo, traffic

    assert callable(run_demo) and DEMO_RULES.is_file()
    groups = {g for g, *_ in traffic()}
    assert {"ordinary users", "denied country (CN)", "blocked CIDR"} <= groups
