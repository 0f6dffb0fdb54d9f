"""Issue 22 on the analysis side: checkpoints, accumulator files and shards that are damaged — flipped
bytes, fields of the wrong JSON type, NaN sums, JSON nested too deep, well-formed but impossible values,
arrays replaced behind their checksum — are one line naming the file, never a traceback or wrong totals."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, line_positions
from plmlens.analysis import Accumulator, AnalysisResult, CheckpointError, MergeError, merge_runs, save_shard
from plmlens.analysis.accumulator import AccumulatorFileError
from plmlens.analysis.checkpoint import Progress, load_checkpoint, save_checkpoint
from plmlens.proteins import Protein

PROPERTIES = ("contact", "aa_A")


def _accumulator(seed: int = 0, n: int = 3) -> Accumulator:
    """Sums of `n` small proteins under random attention (2 layers, 3 heads, 4 bootstrap replicates)."""
    rng = np.random.default_rng(seed)
    proteins = []
    for k in range(n):
        length = 12 + 3 * k
        ca = line_positions(length, 3.8) + rng.normal(scale=2.0, size=(length, 3))
        proteins.append(Protein(id=f"p{k}", sequence="".join(rng.choice(list("ACDEA"), length)), ca=ca))
    acc = Accumulator(2, 3, PROPERTIES, n_bootstrap=4, seed=3)
    lengths = [len(p) for p in proteins]
    width = max(lengths)
    batch = acc.start_batch(proteins, lengths, list(range(n)))
    for layer in range(2):
        attention = torch.zeros(n, 3, width, width)
        for b, length in enumerate(lengths):
            weights = rng.dirichlet(np.full(length, 0.1), size=(3, length)).astype(np.float32)
            attention[b, :, :length, :length] = torch.from_numpy(weights) * 0.9
        batch.add_layer(layer, attention)
    acc.commit(batch)
    assert acc.sums["arcs"].sum() > 0
    return acc


def _fingerprint(acc: Accumulator, index: int = 0, count: int = 1) -> dict:
    settings = {**acc.config(), "max_length": 512, "limit": None, "max_tokens": 1000, "batch_size": None}
    return {"source": "synthetic", "model": {"name": "m"}, "settings": settings,
            "shard": {"index": index, "count": count}}  # fmt: skip


def _checkpoint(tmp_path: Path) -> tuple[Path, Accumulator, dict, Progress]:
    acc = _accumulator()
    fingerprint = _fingerprint(acc)
    counters = {"n_proteins": acc.n_proteins, "n_residues": acc.n_residues, "tokens": 60, "seconds": 1.5}
    progress = Progress(complete_below=3, done=set(), skipped=[], counters=counters)
    path = save_checkpoint(tmp_path / "ck.npz", acc, fingerprint, progress)
    return path, acc, fingerprint, progress


def _members(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _rewrite(path: Path, members: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **members)
    path.write_bytes(buffer.getvalue())


def _edit_json(path: Path, member: str, edit) -> None:
    members = _members(path)
    data = json.loads(str(members[member]))
    edit(data)
    members[member] = np.array(json.dumps(data))
    _rewrite(path, members)


def _one_line(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


# ---- checkpoints --------------------------------------------------------------------------------------------


def test_a_checkpoint_round_trips_with_a_checksum(tmp_path):
    path, acc, fingerprint, progress = _checkpoint(tmp_path)
    meta = json.loads(str(_members(path)["__meta__"]))
    assert meta["checksum"].startswith("sha256:")
    loaded, again = load_checkpoint(path, fingerprint)
    assert again == progress and loaded.n_proteins == acc.n_proteins == 3
    for name, value in acc.sums.items():
        np.testing.assert_array_equal(loaded.sums[name], value, err_msg=name)


def test_a_checkpoint_written_before_checksums_is_read_and_checked(tmp_path):
    path, _, fingerprint, _ = _checkpoint(tmp_path)
    _edit_json(path, "__meta__", lambda meta: meta.pop("checksum", None))
    assert load_checkpoint(path, fingerprint)[0].n_proteins == 3
    members = _members(path)
    del members["hits"]  # the constructor would have filled it with zeros
    _rewrite(path, members)
    with pytest.raises(CheckpointError, match=r"damaged checkpoint \(sums missing: \['hits'\]") as error:
        load_checkpoint(path, fingerprint)
    _one_line(error, path)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["member", "directory_crc", "directory_method"])
def test_flipped_bytes_are_one_line(tmp_path, where):
    path, _, fingerprint, _ = _checkpoint(tmp_path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("boot_arcs.npy")
        entry = archive.start_dir + sum(46 + len(i.filename) + len(i.extra) + len(i.comment)
                                        for i in archive.infolist()[: archive.infolist().index(info)])  # fmt: skip
    if where == "member":  # compressed data: zlib.error or a bad CRC, raised only when the member is read
        _flip(path, info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2)
    else:  # the central directory's CRC of the member (BadZipFile), or its compression method
        _flip(path, entry + (16 if where == "directory_crc" else 10))
    with pytest.raises(CheckpointError, match="unreadable checkpoint") as error:
        load_checkpoint(path, fingerprint)
    _one_line(error, path)


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda run: run.update(fingerprint=[1, 2]), r"its fingerprint or progress is not a record"),
        (lambda run: run.update(progress="all"), r"its fingerprint or progress is not a record"),
        (lambda run: run["progress"].update(complete_below=1e9), r"complete_below is 1000000000.0, not a position"),
        (lambda run: run["progress"].update(complete_below=-1), r"complete_below is -1"),
        (lambda run: run["progress"].update(done=[1.5]), r"done is not a list of distinct positions"),
        (lambda run: run["progress"].update(skipped=[5]), r"a skipped record is 5"),
        (lambda run: run["progress"].update(counters={"tokens": "x"}), r"counters are not non-negative numbers"),
        (lambda run: run["progress"].update(complete_below=10**9), r"1000000000 positions done but 3 proteins"),
        (lambda run: run["progress"]["counters"].update(n_proteins=4), r"the run record counts 4 proteins"),
        (lambda run: run["progress"].update(complete_below=2), r"3 proteins in the sums but 2 positions done"),
    ],
)
def test_run_records_of_the_wrong_type_or_impossible_are_one_line(tmp_path, edit, pattern):
    path, _, fingerprint, _ = _checkpoint(tmp_path)
    members = _members(path)
    run = json.loads(str(members["__run__"]))
    edit(run)
    if isinstance(run.get("fingerprint"), dict):
        fingerprint = run["fingerprint"]
    # Rewritten as plmlens would write it (checksum and all): only the checks can tell.
    acc = Accumulator.load(path)
    path.write_bytes(acc.to_bytes(extra={"__run__": json.dumps(run)}))
    with pytest.raises(CheckpointError, match=pattern) as error:
        load_checkpoint(path, fingerprint)
    _one_line(error, path)


def test_a_run_record_nested_too_deep_is_one_line(tmp_path):
    path, acc, fingerprint, _ = _checkpoint(tmp_path)
    path.write_bytes(acc.to_bytes(extra={"__run__": "[" * 200_000 + "]" * 200_000}))  # was RecursionError
    with pytest.raises(CheckpointError, match=r"unreadable JSON") as error:
        load_checkpoint(path, fingerprint)
    _one_line(error, path)


@pytest.mark.parametrize(
    "damage, pattern",
    [
        (lambda acc: acc.sums["arcs"].__setitem__((0, 0, 0), np.nan), r"sum arcs is not finite"),
        (lambda acc: acc.sums["weight"].__setitem__((0, 0, 0), -1.0), r"sum weight is not finite and non-negative"),
        (lambda acc: acc.sums["hits"].__setitem__((0, 0, 0), 1e6), r"hits exceeds arcs|does not fit"),
        (lambda acc: acc.sums["arcs"].__setitem__((0, 0, 0), 0.5), r"sum arcs counts pairs but is not whole"),
        (lambda acc: setattr(acc, "n_proteins", -7), r"n_proteins, n_residues are -7"),
        (lambda acc: setattr(acc, "n_residues", 2), r"sum \w+ does not fit 3 proteins of 2 residues"),
    ],
)
def test_impossible_sums_are_one_line(tmp_path, damage, pattern):
    path, acc, fingerprint, progress = _checkpoint(tmp_path)
    damage(acc)
    counters = {k: v for k, v in progress.counters.items() if k not in ("n_proteins", "n_residues")}
    save_checkpoint(path, acc, fingerprint, Progress(3, set(), [], counters))  # with a valid checksum
    with pytest.raises(CheckpointError, match=pattern) as error:
        load_checkpoint(path, fingerprint)
    _one_line(error, path)


def test_arrays_replaced_behind_the_checksum_are_one_line(tmp_path):
    path, _, fingerprint, _ = _checkpoint(tmp_path)
    members = _members(path)
    members["weight"] = members["weight"] * 2  # well-formed, consistent: only the checksum tells
    _rewrite(path, members)
    with pytest.raises(CheckpointError, match=r"its arrays do not match their checksum") as error:
        load_checkpoint(path, fingerprint)
    _one_line(error, path)


# ---- accumulator files (a finished run's accumulator.npz) -----------------------------------------------------


def test_accumulator_load_of_a_damaged_file_is_one_line(tmp_path):
    path = _accumulator().save(tmp_path / "accumulator.npz")
    assert Accumulator.load(path).n_proteins == 3
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("null_hits.npy")
    _flip(path, info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2)
    with pytest.raises(AccumulatorFileError, match=r"accumulator\.npz: not a readable accumulator") as error:
        Accumulator.load(path)
    _one_line(error, path)


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda meta: meta.update(n_layers="2"), r"n_layers is a str"),
        (
            lambda meta: meta.update(n_layers=10**12),
            r"is float64\[2, 2, 3\], expected numbers\[2, 1000000000000",
        ),
        (lambda meta: meta.update(properties=["contact", "contact"]), r"properties are not distinct names"),
        (lambda meta: meta.update(support="sideways"), r"support 'sideways'"),
        (lambda meta: meta.update(extra=1), r"unknown settings \['extra'\]"),
        (lambda meta: meta.update(properties=["contact", "no_such_property"]), r"unknown property 'no_such_property'"),
    ],
)
def test_accumulator_settings_of_the_wrong_type_are_one_line(tmp_path, edit, pattern):
    path = _accumulator().save(tmp_path / "accumulator.npz")
    _edit_json(path, "__meta__", lambda meta: (meta.pop("checksum", None), edit(meta)))
    with pytest.raises(AccumulatorFileError, match=pattern) as error:
        Accumulator.load(path)
    _one_line(error, path)


# ---- shards -----------------------------------------------------------------------------------------------------


def _shards(tmp_path: Path, count: int = 2) -> list[Path]:
    directories = []
    for index in range(count):
        acc = _accumulator(seed=index)
        info = {"fingerprint": _fingerprint(acc, index, count), "skipped": [], "n_batches": 1, "tokens": 60,
                "padded_tokens": 70, "n_truncated": 0, "oom_retries": 0, "wall_seconds": 1.0}  # fmt: skip
        directory = tmp_path / f"shard{index}"
        save_shard(AnalysisResult(acc, info=info), directory)
        directories.append(directory)
    return directories


def test_shards_merge_and_each_is_checked(tmp_path):
    directories = _shards(tmp_path)
    assert merge_runs(directories).accumulator.n_proteins == 6


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda r: r["info"]["fingerprint"]["shard"].update(count="2"), r"shard 0/'2' is not an index below a count"),
        (lambda r: r["info"]["fingerprint"]["shard"].update(index=2), r"shard 2/2 is not an index below a count"),
        (lambda r: r["info"].update(tokens="60"), r"tokens is '60'"),
        (lambda r: r["info"].update(skipped=[{"file": 1}]), r"skipped is not a list of skipped records"),
        (lambda r: r.update(alpha=5), r"alpha is 5"),
        (lambda r: r["info"]["fingerprint"]["settings"].update(seed=9), r"accumulator\.npz is not the one of shard"),
    ],
)
def test_damaged_shard_records_are_one_line(tmp_path, edit, pattern):
    directories = _shards(tmp_path)
    path = directories[0] / "shard.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    with pytest.raises(MergeError, match=pattern) as error:
        merge_runs(directories)
    assert "\n" not in str(error.value) and str(directories[0]) in str(error.value)


def test_a_shard_record_nested_too_deep_or_a_damaged_accumulator_is_one_line(tmp_path):
    directories = _shards(tmp_path)
    (directories[0] / "shard.json").write_text("[" * 200_000 + "]" * 200_000)  # was RecursionError
    with pytest.raises(MergeError, match=r"shard\.json: damaged shard record \(unreadable JSON"):
        merge_runs(directories)
    directories = _shards(tmp_path)
    path = directories[1] / "accumulator.npz"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("arcs.npy")
    _flip(path, info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2)
    with pytest.raises(MergeError, match=r"accumulator\.npz: not a readable accumulator") as error:
        merge_runs(directories)
    assert "\n" not in str(error.value)


_HUGE_COUNT_SCRIPT = """
import json, re, resource, sys
from pathlib import Path
from plmlens.analysis import MergeError, merge_runs
size = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, size + 2**30))  # a set of 10**12 shard indices: no
try:
    merge_runs([sys.argv[1]])
except MergeError as error:
    print("MergeError:", error)
"""


def test_a_huge_shard_count_is_not_enumerated(tmp_path):
    (directory,) = _shards(tmp_path, count=1)
    path = directory / "shard.json"
    record = json.loads(path.read_text())
    record["info"]["fingerprint"]["shard"]["count"] = 10**12
    path.write_text(json.dumps(record))
    done = subprocess.run([sys.executable, "-c", _HUGE_COUNT_SCRIPT, str(directory)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("MergeError: shards 1/1000000000000, 2/1000000000000")
    assert done.stdout.strip().endswith("(999,999,999,999 in all) are missing")
