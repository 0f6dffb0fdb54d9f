"""Issue 22 from the outside: every attack of ``tests/tools/attack.py`` (stored script injection, swapped
data on resume, repeated ids, damaged checkpoints and protein sets, outputs replaced or half-written, a
second writer, memory blow-ups, what the terminal is told, the fuzzer's finds) against this checkout's
command line; every attack must hold. About 4 minutes on two cores.

It needs headless Chromium, the sapiens wheel, an antibody structure of ``../shared/data``, root (a tmpfs
for the full-disk attack) and the user ``nobody``; a missing input fails the test, it is never skipped.
``python tests/tools/attack.py`` runs the same list and prints one line per attack.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO, require

pytestmark = pytest.mark.integration


def _load_attack() -> ModuleType:
    """tests/tools/attack.py as the module ``attack`` (its dataclasses look their module up by name)."""
    spec = importlib.util.spec_from_file_location("attack", REPO / "tests" / "tools" / "attack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["attack"] = module
    spec.loader.exec_module(module)
    return module


attack = _load_attack()


def _require_inputs() -> None:
    require(attack.ANTIBODY_PDB, "an antibody structure of ../shared/data")
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.fail("integration input missing: Debian chromium (apt-get install chromium)", pytrace=False)
    if importlib.util.find_spec("sapiens") is None:
        pytest.fail("integration input missing: the sapiens wheel (make install)", pytrace=False)


def test_every_attack_holds() -> None:
    _require_inputs()
    # Not pytest's tmp_path: its base folder is private to the user, and two attacks run as nobody.
    root = Path(tempfile.mkdtemp(prefix="plmlens-attack-"))
    try:
        results = attack.run_attacks(REPO / "src", root, attack.selected())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lines = "\n".join(result.line() for result in results)
    assert results and all(result.verdict.held for result in results), lines
