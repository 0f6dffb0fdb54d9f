"""The package's layers: data flows proteins → models → analysis → probing / causal / features → report → cli, and no
module imports a layer above its own (lazy imports inside functions included); results save data, and only
``report`` draws."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "plmlens"
#: Each subpackage's layer; a module may import its own layer and those below. Top-level modules (ioutils,
#: outputs, distributed) are shared utilities under every layer.
LAYERS = {"proteins": 1, "models": 2, "analysis": 3, "probing": 4, "causal": 4, "features": 4, "report": 5, "cli": 6}


def _layer(module: str) -> int:
    """The layer of a dotted module name under plmlens (0 for the top-level utilities)."""
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every plmlens module `path` imports, with its line: at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "plmlens" or name.startswith("plmlens.")]


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for package, layer in LAYERS.items():
        for path in sorted((SOURCE / package).rglob("*.py")):
            for line, module in _imports(path):
                if _layer(module) > layer:
                    upward.append(f"{path.relative_to(SOURCE.parent)}:{line} imports {module}")
    assert upward == []


def test_the_layers_below_report_never_import_report_or_cli():
    below = [package for package, layer in LAYERS.items() if layer < LAYERS["report"]]
    offending = [
        f"{path.relative_to(SOURCE.parent)}:{line} imports {module}"
        for package in below
        for path in sorted((SOURCE / package).rglob("*.py"))
        for line, module in _imports(path)
        if module.startswith(("plmlens.report", "plmlens.cli"))
    ]
    assert offending == []


def test_the_layering_test_sees_lazy_imports(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from plmlens.report.figures import save_figure\n    import plmlens.cli\n")
    assert _imports(module) == [(2, "plmlens.report.figures"), (3, "plmlens.cli")]


def test_saving_causal_results_loads_no_matplotlib(tmp_path):
    # A fresh interpreter: this test process may have loaded matplotlib already.
    script = textwrap.dedent("""
        import json
        import sys
        from pathlib import Path

        import numpy as np
        import pandas as pd

        import plmlens.analysis, plmlens.models, plmlens.probing, plmlens.proteins
        from plmlens.causal import AblationResult, JacobianResult

        out = Path(sys.argv[1])
        table = pd.DataFrame([
            {"ablation": f"head 1-{h}", "kind": "head", "layer": 1, "head": h, "delta_loss": 0.1 * h}
            for h in (1, 2, 3)
        ])
        heads = pd.DataFrame([
            {"property": "contact", "layer": 1, "head": h, "proportion": 0.2 * h, "few_arcs": False}
            for h in (1, 2, 3)
        ])
        ablation = AblationResult(table, {"model": {"layers": 1, "heads": 3}})
        ablation.save(out, heads)
        rows = pd.DataFrame(columns=["range", *(f"jacobian_p_at_{k}" for k in ("L", "L2", "L5"))])
        JacobianResult(rows, {"a": np.eye(8)}, {}).save(out)
        print(json.dumps({"matplotlib": "matplotlib" in sys.modules, "files": sorted(p.name for p in out.iterdir()),
                          "correlation": ablation.info["loss_contact_correlation"]}))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SOURCE.parent)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["matplotlib"] is False
    assert seen["files"] == ["ablation.csv", "ablation.json", "jacobian.csv", "jacobian.json", "jacobian_maps.npz",
                             "jacobian_summary.csv"]  # fmt: skip
    assert seen["correlation"] == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0), "n_heads": 3}


def test_the_shared_utilities_import_no_layer():
    """``ioutils``, ``outputs``, ``rundir`` and ``distributed`` sit under every layer: they import none."""
    offending = [
        f"{path.name}:{line} imports {module}"
        for path in sorted(SOURCE.glob("*.py"))
        if path.name not in ("__main__.py", "__init__.py")
        for line, module in _imports(path)
        if _layer(module) > 0
    ]
    assert offending == []
