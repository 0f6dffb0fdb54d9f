"""Issue 22 on the protein side: damaged protein sets are one line naming the file; `describe` counts
contacts in memory linear in the length (and exactly as `contact_map` does); anything but a regular file
or a directory is refused; broken links, link loops and unreadable folders are reported; a missing residue
number is -1, explicitly; `Protein`'s fields have the types they claim."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, PdbBuilder, line_positions
from plmlens.proteins import (
    Protein,
    ProteinError,
    Skipped,
    SourceError,
    annotations,
    contact_map,
    describe,
    iter_records,
    read_protein_set,
    record_to_protein,
    save_protein_set,
)
from plmlens.proteins.annotations import contact_counts

# ---- contacts counted, not mapped ------------------------------------------------------------------------


def _random_protein(rng: np.random.Generator, n: int, grid: bool) -> Protein:
    ca = rng.random((n, 3)) * rng.choice([6.0, 15.0, 40.0])
    if grid:  # coordinates on a half-Å grid: many pairs exactly 8 Å apart, where rounding decides
        ca = np.round(ca * 2) / 2
    has_coords = rng.random(n) > rng.choice([0.0, 0.1, 0.5, 1.0])
    ca[~has_coords & (rng.random(n) < 0.5)] = np.nan  # some missing residues have NaN, some only the flag
    cb = ca + rng.normal(size=(n, 3))
    return Protein(id="r", sequence="A" * n, ca=ca, cb=cb, has_coords=has_coords)


@pytest.mark.parametrize("chunked", [False, True])
def test_contact_counts_equal_contact_map_on_random_proteins(monkeypatch, chunked):
    if chunked:
        # Send every protein down the exact path, a few candidate pairs at a time.
        monkeypatch.setattr(annotations, "_MARGIN", 0.5)
        monkeypatch.setattr(annotations, "_PAIR_CHUNK", 7)
    rng = np.random.default_rng(22)
    checked_hits = 0
    for k in range(120):
        protein = _random_protein(rng, int(rng.integers(1, 160)), grid=k % 2 == 0)
        for atom, threshold, separation in (("CA", 8.0, 6), ("CB", 8.0, 6), ("CA", 5.5, 0), ("CA", 8.0, 12)):
            contacts = contact_map(protein, threshold=threshold, min_separation=separation, atom=atom)
            expected = (int(contacts.filled(False).sum()), int(contacts.count()))
            assert contact_counts(protein, threshold, separation, atom) == expected, (k, atom, threshold)
            checked_hits += expected[0]
    assert checked_hits > 10_000  # the comparison saw real contacts, not only empty maps


def test_contact_counts_of_exact_threshold_pairs():
    # Residues 0 and 6 exactly 8 Å apart are not in contact (d < 8), residues 0 and 7 at 7.999 Å are.
    ca = line_positions(8, 20.0)
    ca[6] = [8.0, 0.0, 0.0]
    ca[7] = [0.0, 7.999, 0.0]
    protein = Protein(id="t", sequence="A" * 8, ca=ca)
    assert contact_counts(protein) == (2, 64)
    assert contact_counts(Protein(id="s", sequence="ACDE")) == (0, 0)  # no coordinates: nothing defined


def test_describe_long_chains_in_bounded_memory(tmp_path):
    n = 200_000
    fasta = tmp_path / "long.fasta"
    fasta.write_text(">long\n" + "ACDEFGHIKL" * (n // 10) + "\n")
    ca = np.stack([np.arange(n) % 500 * 3.8, np.arange(n) // 500 * 3.8, np.zeros(n)], axis=1)
    with_coords = Protein(id="c", sequence="A" * n, ca=ca)
    records = list(iter_records(str(fasta)))
    tracemalloc.start()
    try:
        # Was contact_map: an L x L matrix, 894 GiB for the sequence alone.
        description = describe([*records, with_coords])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400 * 2**20, f"{peak / 2**20:.0f} MiB"
    counts = description.to_dict()["counts"]["contact"]
    assert counts["total"] == n * n  # only the structure's pairs are defined
    assert 2 * n < counts["hits"] < 30 * n


def test_describe_a_long_protein_set_without_coordinates_costs_nothing(tmp_path):
    # Was 2 PiB for a 10-million-residue set: pairs of residues without coordinates are never built.
    path = save_protein_set([Protein(id=f"s{k}", sequence="ACDEFGHIKL" * 50_000) for k in range(4)],
                            tmp_path / "long.proteins.npz")  # fmt: skip
    tracemalloc.start()
    try:
        description = describe(iter_records(str(path)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert description.n_residues == 2_000_000
    assert description.to_dict()["counts"]["contact"] == {"hits": 0, "total": 0}
    assert description.backgrounds()["contact"] is None


def test_describe_backgrounds_unchanged_on_ordinary_proteins():
    rng = np.random.default_rng(5)
    proteins = [_random_protein(rng, int(rng.integers(20, 120)), grid=False) for _ in range(10)]
    hits = sum(int(contact_map(p).filled(False).sum()) for p in proteins)
    total = sum(int(contact_map(p).count()) for p in proteins)
    counts = describe(proteins).to_dict()["counts"]["contact"]
    assert (counts["hits"], counts["total"]) == (hits, total) and hits > 0


# ---- anything but a regular file or a directory --------------------------------------------------------

_REFUSE_SCRIPT = """
import re, resource, sys
from plmlens.proteins import SourceError, iter_records
# Reading /dev/zero would take all memory: let it take 1 GiB more than the imports did, at most.
size = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, size + 2**30))
try:
    records = list(iter_records(sys.argv[1]))
except SourceError as error:
    print("SourceError:", error)
else:
    print("records:", records)
"""


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_source_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    path = tmp_path / ("x.fasta" if kind == "fifo" else "x.pdb")
    if kind == "fifo":
        os.mkfifo(path)  # a read would block forever
    else:
        path.symlink_to("/dev/zero")  # a read would never end
    # In a child with a memory limit and a timeout: the old reader hung or read until MemoryError.
    try:
        done = subprocess.run([sys.executable, "-c", _REFUSE_SCRIPT, str(path)], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {kind} did not end")
    what = "a FIFO" if kind == "fifo" else "a character device"
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"SourceError: {path}: not a regular file or directory ({what})"


def _pdb_text(n: int = 40) -> str:
    builder = PdbBuilder()
    for k in range(n):
        builder.residue("ALA", "A", k + 1, (3.8 * k, 0.0, 0.0))
    return builder.text()


def test_entries_of_a_directory_that_cannot_be_read_are_reported(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.pdb").write_text(_pdb_text())
    (folder / "sub" / "also.pdb").write_text(_pdb_text())
    (folder / "README").write_text("not a structure: no skip line")
    os.mkfifo(folder / "pipe.pdb")
    (folder / "zero.pdb").symlink_to("/dev/zero")
    (folder / "gone.pdb").symlink_to(folder / "nowhere.pdb")
    (folder / "notes").symlink_to(folder / "missing-folder")  # broken, whatever it was meant to be
    (folder / "loop.cif").symlink_to(folder / "loop.cif")
    (folder / "linked").symlink_to(folder / "sub")
    (folder / "locked").mkdir()
    (folder / "locked" / "hidden.pdb").write_text(_pdb_text())
    # Tests run as root here, for whom chmod 000 locks nothing: the folder fails to list as it would.
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == folder / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    records = list(iter_records(f"{folder}::dssp=false"))
    assert sorted(r.id for r in records if isinstance(r, Protein)) == ["ALSO.A", "GOOD.A"]
    reasons = {Path(r.source).name: r.reason for r in records if isinstance(r, Skipped)}
    assert reasons == {
        "pipe.pdb": "not a regular file or directory (a FIFO)",
        "zero.pdb": "not a regular file or directory (a character device)",
        "gone.pdb": "broken symbolic link",
        "notes": "broken symbolic link",
        "loop.cif": "symbolic link loop",
        "linked": "link to a directory: not followed (give it as its own SOURCE)",
        "locked": "unreadable folder (Permission denied)",
    }
    assert all("\n" not in str(r) for r in records)


@contextlib.contextmanager
def _time_limit(seconds: int):
    """A read that blocks (a FIFO without a writer) fails the test instead of hanging it."""

    def expire(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_an_unreadable_source_directory_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "good.pdb").write_text(_pdb_text())
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError, match=rf"^{re.escape(str(folder))}: cannot read directory \(Permission denied\)$"):
        list(iter_records(str(folder)))


def test_a_fifo_named_in_a_glob_or_met_by_a_reader_is_a_skip(tmp_path):
    from plmlens.proteins import read_structure_file

    os.mkfifo(tmp_path / "pipe.pdb")
    (tmp_path / "good.pdb").write_text(_pdb_text())
    with _time_limit(20):
        records = list(iter_records(f"{tmp_path}/*.pdb::dssp=false"))
    assert [r.reason for r in records if isinstance(r, Skipped)] == ["not a regular file or directory (a FIFO)"]
    with _time_limit(20):
        (skipped,) = read_structure_file(tmp_path / "pipe.pdb")  # e.g. a partner file or a manifest's entry
    assert isinstance(skipped, Skipped) and skipped.reason == "not a regular file"


# ---- residue numbers and field types ----------------------------------------------------------------------


def test_missing_residue_numbers_are_minus_one_without_a_cast_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the NaN -> int64 cast warned and gave -9223372036854775808
        protein = Protein(id="n", sequence="ACDE", residue_numbers=np.array([1.0, np.nan, 3.0, 4.0]))
        assert protein.residue_numbers.tolist() == [1, -1, 3, 4]
        assert protein.residue_numbers.dtype == np.int64
        assert Protein(id="o", sequence="AC", residue_numbers=[7, None]).residue_numbers.tolist() == [7, -1]
    for bad in ([1.5, 2.0], [np.inf, 1.0], ["a", "b"], [True, False]):
        with pytest.raises(ProteinError, match="residue numbers must be integers"):
            Protein(id="b", sequence="AC", residue_numbers=bad)


def test_dataset_positions_without_a_number_are_unknown_and_unlabelled():
    record = {"id": "d", "primary": "ACDE", "positions": [10.0, np.nan, 12.0, 13.0], "sites": [12, np.nan]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        protein = record_to_protein(record, "labels.lmdb", "0")
    assert protein.residue_numbers.tolist() == [10, -1, 12, 13]
    assert protein.binding_site.tolist() == [False, False, True, False]
    with pytest.raises(ProteinError, match="residue numbers must be integers"):
        record_to_protein({**record, "positions": [10.5, 11, 12, 13]}, "labels.lmdb", "0")
    with pytest.raises(ProteinError, match="'ss8' labels outside"):
        record_to_protein({"id": "s", "primary": "AC", "ss8": [1.0, np.nan]}, "ss.lmdb", "0")


@pytest.mark.parametrize("field, value", [("id", ["a"]), ("sequence", ["A", "C"]), ("chain", 1), ("meta", []),
                                          ("dssp", ["H", "H"]), ("source", 3)])  # fmt: skip
def test_protein_fields_have_their_types(field, value):
    with pytest.raises(ProteinError, match=rf"{field} is a \w+, not"):
        Protein(**{"id": "x", "sequence": "AC", **{field: value}})


# ---- protein sets -------------------------------------------------------------------------------------------


def _set(tmp_path: Path) -> Path:
    ca = line_positions(6, 3.8).astype(np.float32)
    ca[2] = np.nan
    proteins = [
        Protein(id="a", sequence="ACDEFG", source="a.pdb", chain="A", ca=ca, cb=ca + 1, dssp="HHE-TS",
                binding_site=[0, 1, 0, 0, 1, 0], meta={"score": float("nan"), "kept": [1, 2]}),
        Protein(id="b", sequence="GHIK", ptm=[1, 0, 0, 0]),
    ]  # fmt: skip
    return save_protein_set([proteins[0], Skipped("y.pdb", "B", "too short"), proteins[1]], tmp_path / "s.proteins.npz")


def _members(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _rewrite(path: Path, members: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    path.write_bytes(buffer.getvalue())


def _edit_index(path: Path, edit) -> None:
    members = _members(path)
    header = json.loads(str(members["__index__"]))
    edit(header)
    members["__index__"] = np.array(json.dumps(header))
    _rewrite(path, members)


def _refused(path: Path, pattern: str) -> str:
    with pytest.raises(SourceError) as caught:
        list(iter_records(str(path)))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert re.search(pattern, message), message
    return message


def test_a_set_round_trips_with_its_checksum_and_nan_in_meta(tmp_path):
    path = _set(tmp_path)
    header = json.loads(str(_members(path)["__index__"]))
    assert header["checksum"].startswith("sha256:") and len(header["checksum"]) == 7 + 64
    records = list(read_protein_set(path))
    assert [r.id if isinstance(r, Protein) else r.reason for r in records] == ["a", "too short", "b"]
    assert np.isnan(records[0].meta["score"]) and records[0].meta["kept"] == [1, 2]


def test_a_set_written_before_checksums_is_read_and_checked(tmp_path):
    path = _set(tmp_path)
    _edit_index(path, lambda header: header.pop("checksum"))
    assert [r.id for r in read_protein_set(path) if isinstance(r, Protein)] == ["a", "b"]
    members = _members(path)
    members["residue_numbers"] = members["residue_numbers"].astype(np.float64)
    _rewrite(path, members)
    _refused(path, r"damaged protein set \(array residue_numbers is float64\[10\], expected int64\[10\]")


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_member_or_the_directory_are_one_line(tmp_path):
    path = _set(tmp_path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("ca.npy")
        central = archive.start_dir
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    _flip(path, start + info.compress_size // 2)  # compressed data: zlib.error or a bad CRC
    _refused(path, r"not a readable protein set")
    path = _set(tmp_path)
    _flip(path, central + 10)  # the first directory entry's compression method
    _refused(path, r"not a readable protein set")


def test_a_member_claiming_a_huge_shape_is_refused_before_allocating(tmp_path):
    path = _set(tmp_path)
    buffer = io.BytesIO()
    header = {"descr": "|b1", "fortran_order": False, "shape": (10**13,)}  # 10 TB of bool, in 10 bytes
    np.lib.format.write_array_header_1_0(buffer, header)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("has_coords2.npy", buffer.getvalue() + bytes(10))
    tracemalloc.start()
    try:
        _refused(path, r"claims \(10000000000000,\) bool in \d+ bytes")
        assert tracemalloc.get_traced_memory()[1] < 100 * 2**20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda h: h["records"][0].update(sequence=list("ACDEFG")), r"record 0: sequence is a list"),
        (lambda h: h["records"][0].update(labels="yes"), r"record 0: labels is a str"),
        (lambda h: h["records"][0].update(dssp="HH"), r"record 0: 2 DSSP states for 6 residues"),
        (lambda h: h["records"][0].update(sequence="ACDEFB"), r"record 0: sequence is not one of the 20"),
        (lambda h: h["records"][1]["skipped"].update(reason=5), r"record 1: reason is a int"),
        (lambda h: h["records"].append(7), r"record 3 is a int, not a dict"),
        (lambda h: h.update(records={"a": 1}), r"records is a dict, not a list"),
        (lambda h: h.update(checksum="md5:abc"), r"checksum field is 'md5:abc'"),
    ],
)
def test_index_fields_of_the_wrong_type_or_value_are_one_line(tmp_path, edit, pattern):
    path = _set(tmp_path)
    _edit_index(path, edit)
    _refused(path, pattern)


def test_an_index_nested_too_deep_is_one_line(tmp_path):
    path = _set(tmp_path)
    members = _members(path)
    members["__index__"] = np.array("[" * 200_000 + "]" * 200_000)  # was RecursionError
    _rewrite(path, members)
    _refused(path, r"damaged protein set index \(unreadable JSON")


def test_replaced_arrays_fail_their_checksum(tmp_path):
    path = _set(tmp_path)
    members = _members(path)
    members["ca"] = members["ca"] + 1  # well-formed, of the right shape and type: only the checksum tells
    _rewrite(path, members)
    _refused(path, r"damaged file \(its arrays do not match their checksum\)")


def test_a_damaged_set_fails_before_any_record_comes_out(tmp_path):
    path = _set(tmp_path)
    _edit_index(path, lambda h: h["records"][2].update(id=["b"]))
    records = iter_records(str(path))
    with pytest.raises(SourceError, match=r"record 2: id is a list"):
        next(records)


def test_protein_set_source_checks_the_file(tmp_path):
    from plmlens.proteins.store import protein_set_source

    path = save_protein_set([], tmp_path / "e.proteins.npz", source="fasta::x")
    assert protein_set_source(path) == "fasta::x"
    path.write_bytes(b"garbage")
    with pytest.raises(ProteinError, match=r"e\.proteins\.npz: not a readable protein set"):
        protein_set_source(path)


def test_no_pickle_in_any_member(tmp_path):
    path = _set(tmp_path)
    members = _members(path)
    members["label.ptm.values"] = np.array([object()] * len(members["label.ptm.values"]), dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **members)  # allow_pickle is on when writing
    path.write_bytes(buffer.getvalue())
    _refused(path, r"holds Python objects \(refused: no unpickling\)")
