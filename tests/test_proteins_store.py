"""Protein sets: records saved once read back identically, in order, skips included; analyses of a set
equal analyses of its source; damaged or foreign files are one-line errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from plmlens.analysis import analyze
from plmlens.cli import app
from plmlens.models import load_model
from plmlens.proteins import Protein, Skipped, SourceError, iter_records, read_protein_set, save_protein_set
from scale_fixtures import synthetic_structures, tiny_bert


def _same(a: Protein, b: Protein) -> None:
    assert (a.id, a.sequence, a.source, a.chain, a.dssp) == (b.id, b.sequence, b.source, b.chain, b.dssp)
    for name in ("residue_numbers", "insertion_codes", "ca", "cb", "has_coords"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("binding_site", "ptm"):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            np.testing.assert_array_equal(left, right, err_msg=name)
    assert json.loads(json.dumps(a.meta, default=str)) == b.meta


def test_round_trip_keeps_every_field_order_and_skip(tmp_path):
    ca = np.arange(15, dtype=np.float32).reshape(5, 3)
    ca[2] = np.nan
    proteins = [
        Protein(id="a", sequence="ACDEF", source="x.pdb", chain="A", ca=ca, cb=ca + 1, dssp="HHE-T",
                binding_site=[0, 1, 0, 0, 1], residue_numbers=[5, 6, 6, 7, 9],
                insertion_codes=["", "", "A", "", ""], meta={"chain_type": "heavy", "variable_domain": (1, 5)}),
        Protein(id="b", sequence="GH", ptm=[1, 0]),
    ]  # fmt: skip
    records = [proteins[0], Skipped("y.pdb", "B", "no residues"), proteins[1]]
    path = save_protein_set(records, tmp_path / "set.proteins.npz", source="somewhere::dssp=false")
    back = list(read_protein_set(path))
    assert isinstance(back[1], Skipped) and back[1] == records[1]
    _same(proteins[0], back[0])
    _same(proteins[1], back[2])
    assert back[0].meta["variable_domain"] == [1, 5]
    # A set is a source, with the options every source takes.
    assert [p.id for p in iter_records(f"{path}::limit=1") if isinstance(p, Protein)] == ["a"]
    with pytest.raises(ValueError, match=r"ends with \.proteins\.npz"):
        save_protein_set(records, tmp_path / "set.npz")


def test_analysis_of_a_set_equals_analysis_of_its_source(tmp_path):
    source = f"{synthetic_structures(tmp_path / 'structures', 6)}::dssp=false"
    result = CliRunner().invoke(app, ["proteins", "save", source, "--out", str(tmp_path / "s.proteins.npz")])
    assert result.exit_code == 0, result.output
    adapter = load_model(str(tiny_bert(tmp_path / "bert")))
    direct = analyze(adapter, iter_records(source), ("contact", "binding_site"), n_bootstrap=5)
    cached = analyze(adapter, iter_records(str(tmp_path / "s.proteins.npz")), ("contact", "binding_site"),
                     n_bootstrap=5)  # fmt: skip
    for name, value in direct.accumulator.sums.items():
        np.testing.assert_array_equal(cached.accumulator.sums[name], value, err_msg=name)
    assert direct.info["n_skipped"] == cached.info["n_skipped"] == 1  # the short chain, kept as a skip


def test_damaged_or_foreign_sets_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.proteins.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(SourceError, match=r"bad\.proteins\.npz: not a readable protein set"):
        list(iter_records(str(bad)))
    # An object array would need unpickling: refused, never executed.
    buffer = io.BytesIO()
    np.savez(buffer, __index__=np.array([{"format": "plmlens-proteins/1"}], dtype=object))
    pickled = tmp_path / "pickled.proteins.npz"
    pickled.write_bytes(buffer.getvalue())
    with pytest.raises(SourceError, match="not a readable protein set"):
        list(iter_records(str(pickled)))
    other = save_protein_set([], tmp_path / "empty.proteins.npz")
    with np.load(other) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["__index__"] = np.array(json.dumps({"format": "other/9", "records": []}))
    np.savez(tmp_path / "foreign.proteins.npz", **arrays)
    with pytest.raises(SourceError, match="format 'other/9'"):
        list(iter_records(str(tmp_path / "foreign.proteins.npz")))
