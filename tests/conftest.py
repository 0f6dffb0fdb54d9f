"""Shared fixtures: paths of the real data (integration tests fail loudly when it is missing) and a
builder of synthetic PDB files whose annotations are known by construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PROMOD3_DB = Path("/usr/share/promod3/loop_data/structure_db.dat")


def require(path: Path, what: str) -> Path:
    """The path, or a loud test failure (never a skip): CI must have every integration input."""
    if not path.exists():
        pytest.fail(f"integration input missing: {what} at {path}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require(SHARED_DATA, "../shared/data beside the repository")


@pytest.fixture(scope="session")
def promod3_db() -> Path:
    return require(PROMOD3_DB, "Debian promod3-data (apt-get install promod3-data)")


# Ideal L-alanine backbone + CB around CA at the origin (Engh & Huber geometry), Å.
IDEAL = {
    "N": np.array([-0.525, 1.363, 0.0]),
    "CA": np.array([0.0, 0.0, 0.0]),
    "C": np.array([1.526, 0.0, 0.0]),
    "O": np.array([2.153, -1.062, 0.0]),
    "CB": np.array([-0.529, -0.774, -1.205]),
}


@dataclass
class PdbBuilder:
    """Writes PDB text: residues placed at chosen CA positions with an ideal backbone (+CB)."""

    lines: list[str] = field(default_factory=list)
    serial: int = 0

    def atom(self, record: str, name: str, resname: str, chain: str, number: int, xyz, element: str,
             icode: str = " ") -> None:  # fmt: skip
        self.serial += 1
        x, y, z = (float(v) for v in xyz)
        atom_name = f" {name:<3}" if len(name) < 4 else name
        self.lines.append(
            f"{record:<6}{self.serial:>5} {atom_name:<4} {resname:>3} {chain}{number:>4}{icode}   "
            f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00          {element:>2}"
        )

    def residue(self, resname: str, chain: str, number: int, ca_position, *, record: str = "ATOM",
                atoms: tuple[str, ...] = ("N", "CA", "C", "O", "CB"), icode: str = " ") -> None:  # fmt: skip
        for name in atoms:
            if name == "CB" and resname == "GLY":
                continue
            self.atom(record, name, resname, chain, number, np.asarray(ca_position) + IDEAL[name], name[0], icode)

    def hetero(self, resname: str, chain: str, number: int, xyz, element: str = "C", name: str = "C1") -> None:
        self.atom("HETATM", name, resname, chain, number, xyz, element)

    def raw(self, line: str) -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join([*self.lines, "END", ""])


def line_positions(n: int, spacing: float = 10.0) -> np.ndarray:
    """CA positions on a line, `spacing` Å apart: far enough that nothing is in contact."""
    return np.stack([np.arange(n) * spacing, np.zeros(n), np.zeros(n)], axis=1)


@pytest.fixture
def pdb_builder() -> type[PdbBuilder]:
    return PdbBuilder
