"""A user's install: the wheel that `python -m build` makes, pip-installed into a fresh virtual environment
(no make, no npm), runs analyze, probe and report; without NGL the report says how to get 3D views."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scale_fixtures import synthetic_structures, tiny_bert

REPO = Path(__file__).resolve().parents[1]


def _run(*command: str | Path, cwd: Path | None = None, env: dict | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(map(str, command))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _copy_sources(target: Path) -> None:
    """The files a clean clone has (what a user builds from), not this checkout's venv or runs."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)


@pytest.mark.integration
def test_wheel_in_a_fresh_venv_runs_analyze_probe_and_report(tmp_path):
    sources, dist, venv = tmp_path / "sources", tmp_path / "dist", tmp_path / "venv"
    _copy_sources(sources)
    _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, sources)
    (wheel,) = dist.glob("plmlens-*.whl")
    _run(sys.executable, "-m", "venv", venv)
    pip, plmlens = venv / "bin" / "pip", venv / "bin" / "plmlens"
    # The CPU torch wheel this project is tested with, as `make install` pins it; the package itself only
    # asks for an honest range, so a user's CUDA build of torch is kept.
    _run(pip, "install", "-q", "torch==2.13.0")
    _run(pip, "install", "-q", wheel)
    requirement = subprocess.run([venv / "bin" / "python", "-c", "import importlib.metadata as m; "
                                  "print([r for r in m.requires('plmlens') if r.startswith('torch')])"],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "torch>=" in requirement and "==" not in requirement

    model = tiny_bert(tmp_path / "model")
    data = f"{synthetic_structures(tmp_path / 'structures', 5)}::dssp=false"
    run = tmp_path / "run"
    # Outside the checkout, with no NGL anywhere the installed package looks.
    env = {k: v for k, v in os.environ.items() if k != "PLMLENS_NGL_JS"}
    analyze = ("analyze", "--model", model, "--data", data, "--out", run, "--n-bootstrap", "10")
    _run(plmlens, *analyze, cwd=tmp_path, env=env)
    _run(plmlens, "probe", "--model", model, "--data", data, "--out", run / "probe", cwd=tmp_path, env=env)
    output = _run(plmlens, "report", run, cwd=tmp_path, env=env)
    page = (run / "report.html").read_text()
    assert "<img" in page and "Top head per property" in page
    hint = [line for line in output.splitlines() if "NGL" in line]
    assert hint and "npm install" in hint[0] and "PLMLENS_NGL_JS" in output
    assert "PLMLENS_NGL_JS" in page  # the page says how to enable its 3D views
