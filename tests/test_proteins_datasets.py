"""TAPE LMDB/JSON datasets, the paper's label files and FASTA, written by the tests in the exact
published layouts; corrupt and hostile inputs."""

from __future__ import annotations

import json
import os
import pickle

import lmdb
import numpy as np
import pytest

from plmlens.proteins import contact_map, iter_records, read_dataset, read_fasta
from plmlens.proteins.safe_pickle import UnsafePickleError, safe_loads
from plmlens.proteins.skips import Skipped


def write_tape_lmdb(path, records, raw_extra=None):
    """An LMDB as TAPE writes it: ``num_examples`` and str(index) keys with pickled dicts."""
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(b"num_examples", pickle.dumps(len(records) + len(raw_extra or [])))
        for i, record in enumerate(records):
            txn.put(str(i).encode(), pickle.dumps(record))
        for j, raw in enumerate(raw_extra or []):
            txn.put(str(len(records) + j).encode(), raw)
    env.close()
    return path


def proteinnet_record(n=30, seed=0):
    rng = np.random.default_rng(seed)
    tertiary = np.stack([np.arange(n) * 10.0, np.zeros(n), np.zeros(n)], axis=1)
    tertiary[25] = tertiary[2] + [0.0, 5.0, 0.0]  # one contact: 2-25
    valid = np.ones(n, dtype=bool)
    valid[10] = False
    return {
        "id": f"1ABC_{seed}_A", "primary": "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), n)),
        "tertiary": tertiary, "valid_mask": valid, "protein_length": n,
        "evolutionary": np.zeros((n, 30), dtype=np.float32),
    }  # fmt: skip


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_proteinnet_lmdb_contacts_and_valid_mask(tmp_path):
    path = write_tape_lmdb(tmp_path / "proteinnet_train.lmdb", [proteinnet_record()])
    (protein,) = list(read_dataset(path))
    assert protein.id == "1ABC_0_A" and len(protein) == 30
    contacts = contact_map(protein)
    assert {tuple(p) for p in np.argwhere(contacts.filled(False))} == {(2, 25), (25, 2)}
    assert contacts.mask[10].all() and not contacts.mask[11, 12]


def test_secondary_structure_lmdb_and_json_agree(tmp_path):
    ss8 = np.array([1, 1, 0, 2, 4, 3, 5, 6, 7, 7])  # H H G I E B S T C C in TAPE's GHIBESTC order
    record = {"id": "ss1", "primary": "ACDEFGHIKL", "ss3": np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2]),
              "ss8": ss8, "protein_length": 10}  # fmt: skip
    lmdb_path = write_tape_lmdb(tmp_path / "secondary_structure_train.lmdb", [record])
    json_path = tmp_path / "secondary_structure_train.json"
    json_path.write_text(json.dumps([{k: v.tolist() if hasattr(v, "tolist") else v for k, v in record.items()}]))
    for path in (lmdb_path, json_path):
        (protein,) = list(read_dataset(path))
        assert protein.dssp == "HHGIEBST--"
        assert list(protein.ss_classes) == ["helix"] * 4 + ["strand"] * 2 + ["turn_bend"] * 2 + ["other"] * 2
        assert protein.binding_site is None and protein.ptm is None


def test_provis_label_files_map_pdb_numbers(tmp_path):
    sites = {"id": "4abc.A", "primary": "ACDEFGHIK", "positions": [5, 6, 7, 8, 9, 10, 11, 12, 13],
             "sites": [6, 12, 99]}  # fmt: skip
    mods = {"id": "4abc.A", "primary": "ACDEFGHIK", "positions": [5, 6, 7, 8, 9, 10, 11, 12, 13],
            "modifications": [5]}  # fmt: skip
    (bs,) = list(read_dataset(write_tape_lmdb(tmp_path / "binding_site_valid.lmdb", [sites])))
    (ptm,) = list(read_dataset(write_tape_lmdb(tmp_path / "protein_modification_valid.lmdb", [mods])))
    assert list(np.flatnonzero(bs.binding_site)) == [1, 7] and bs.ptm is None
    assert list(np.flatnonzero(ptm.ptm)) == [0] and ptm.binding_site is None
    assert list(bs.residue_numbers) == list(range(5, 14))


def test_bad_records_are_skipped_and_the_rest_read(tmp_path):
    good = proteinnet_record(seed=1)
    short_mask = dict(proteinnet_record(seed=2), valid_mask=np.ones(3, dtype=bool))
    empty = {"id": "empty", "primary": "", "ss8": np.array([], dtype=int)}
    path = write_tape_lmdb(
        tmp_path / "mixed.lmdb",
        [good, short_mask, empty],
        raw_extra=[b"\x80\x04garbage", pickle.dumps(Evil())],
    )
    records = list(read_dataset(path))
    proteins = [r for r in records if not isinstance(r, Skipped)]
    skipped = [r for r in records if isinstance(r, Skipped)]
    assert [p.id for p in proteins] == ["1ABC_1_A"]
    reasons = {s.record: s.reason for s in skipped}
    assert "valid_mask" in reasons["1ABC_2_A"]
    assert "empty sequence" in reasons["empty"]
    assert "unreadable record" in reasons["3"]
    assert "refusing to unpickle" in reasons["4"] and "system" in reasons["4"]


def test_corrupt_lmdb_is_one_clear_skip(tmp_path):
    path = tmp_path / "corrupt.lmdb"
    path.mkdir()
    (path / "data.mdb").write_bytes(b"\x00" * 100 + b"not an lmdb" * 50)
    records = list(iter_records(str(path)))
    assert len(records) == 1 and isinstance(records[0], Skipped)
    assert records[0].source == str(path) and "LMDB" in records[0].reason


def test_restricted_unpickler_admits_numpy_and_refuses_globals():
    data = {"a": np.arange(3, dtype=np.int16), "b": [1.5, "x"], "c": np.float32(2.0)}
    loaded = safe_loads(pickle.dumps(data))
    np.testing.assert_array_equal(loaded["a"], data["a"])
    assert loaded["b"] == [1.5, "x"]
    with pytest.raises(UnsafePickleError):
        safe_loads(pickle.dumps(Evil()))


def test_fasta(tmp_path):
    path = tmp_path / "seqs.fasta"
    path.write_text(">sp|P1|first protein\nACDEU\nBZKL*\n>second\nMK1L\n>third\n\n")
    records = list(read_fasta(path))
    first = records[0]
    assert first.id == "sp|P1|first" and first.sequence == "ACDEXXXKL"
    assert not first.has_coords.any() and contact_map(first).mask.all()
    assert isinstance(records[1], Skipped) and "outside the 20 amino acids" in records[1].reason
    assert isinstance(records[2], Skipped) and "empty sequence" in records[2].reason
