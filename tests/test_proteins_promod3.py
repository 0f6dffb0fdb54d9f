"""The ProMod3 structure database reader, on a tiny file written in the documented layout."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from plmlens.proteins import StructureDB, iter_records
from plmlens.proteins.promod3 import is_structure_db
from plmlens.proteins.skips import Skipped


def write_db(path, chains):
    """chains: list of (pdb_id, chain, sequence, backbone (n, 4, 3) in Å, dssp, shift)."""
    header = bytearray(0x4D)
    table = bytearray()
    offset = 0
    for pdb_id, chain, sequence, _, _, shift in chains:
        table += struct.pack("<I", len(pdb_id)) + pdb_id.encode()
        table += struct.pack("<I", len(chain)) + chain.encode()
        table += struct.pack("<IHh3f", offset, len(sequence), 1, *shift)
        offset += len(sequence)
    n = offset
    seq = b"".join(c[2].encode() for c in chains)
    backbone = b"".join(np.round((c[3] + np.asarray(c[5])) / 0.01).astype("<i2").tobytes() for c in chains)
    dssp = b"".join(c[4].encode() for c in chains)
    arrays = [(seq, 1), (backbone, 24), (b"\0" * 4 * n, 4), (b"\0" * 2 * n, 2), (b"\0" * 2 * n, 2),
              (dssp, 1), (b"\0" * 40 * n, 40), (b"\0" * 40 * n, 40)]  # fmt: skip
    body = b"".join(struct.pack("<Q", n) + data for data, _ in arrays)
    path.write_bytes(bytes(header) + struct.pack("<Q", len(chains)) + bytes(table) + body)
    return path


def ideal_backbone(ca):
    n = ca + np.array([-0.525, 1.363, 0.0])
    c = ca + np.array([1.526, 0.0, 0.0])
    o = ca + np.array([2.153, -1.062, 0.0])
    return np.stack([n, ca, c, o], axis=1)


@pytest.fixture
def tiny_db(tmp_path):
    ca1 = np.stack([np.arange(12) * 10.0, np.zeros(12), np.zeros(12)], axis=1)
    ca1[9] = ca1[1] + [0.0, 7.0, 0.0]
    ca2 = np.stack([np.zeros(40), np.arange(40) * 4.0, np.zeros(40)], axis=1)
    chains = [
        ("1abc", "A", "ACDEFGHIKLMN", ideal_backbone(ca1), "HHHH EEE TS ", (1.5, -2.0, 3.0)),
        ("2XYZ", "B", "W" * 40, ideal_backbone(ca2), "-" * 40, (0.0, 0.0, 0.0)),
    ]
    return write_db(tmp_path / "structure_db.dat", chains), ca1


def test_reads_coordinates_dssp_and_ids(tiny_db):
    path, ca1 = tiny_db
    assert is_structure_db(path)
    db = StructureDB(path)
    assert len(db) == 2
    first = db.get("1ABC.A")
    assert first.sequence == "ACDEFGHIKLMN" and first.dssp == "HHHH-EEE-TS-"
    np.testing.assert_allclose(first.ca, ca1, atol=0.01)
    assert np.allclose(np.linalg.norm(first.cb - first.ca, axis=1), 1.52, atol=0.03)
    assert db[1].id == "2XYZ.B"


def test_filters_by_length_and_ids(tiny_db):
    path, _ = tiny_db
    assert [p.id for p in iter_records(f"{path}::min_length=20")] == ["2XYZ.B"]
    assert [p.id for p in iter_records(f"{path}::max_length=20")] == ["1ABC.A"]
    records = list(iter_records(f"{path}::ids=2xyz.B+9ZZZ.Q"))
    assert [r.id for r in records if not isinstance(r, Skipped)] == ["2XYZ.B"]
    assert [r.record for r in records if isinstance(r, Skipped)] == ["9ZZZ.Q"]


def test_not_a_database(tmp_path):
    bogus = tmp_path / "structure_db.dat"
    bogus.write_bytes(b"\xff" * 200)
    assert not is_structure_db(bogus)
