"""Scale, in one process: the torch statistics engine against numpy, length-bucketed batches, the token
budget, out-of-memory splits, checkpoints and resume, shards and merge, devices and dtypes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from plmlens.analysis import (
    Accumulator,
    AnalysisResult,
    CheckpointError,
    MergeError,
    analyze,
    merge_runs,
    pack_batches,
    save_shard,
)
from plmlens.analysis.checkpoint import Progress, load_checkpoint, save_checkpoint
from plmlens.distributed import Shard
from plmlens.models import ModelLoadError, load_model, resolve_device, resolve_dtype
from plmlens.proteins import Protein, Skipped, iter_records
from scale_fixtures import random_walk, synthetic_structures, tiny_bert
from test_analysis import planted_proteins

PROPERTIES = ["contact", "contact_long", "binding_site", "aa_A", "aa_C", "aa_L"]
COUNTS = ["n_arcs", "n_hits"]


def assert_same_heads(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Counts exactly; every float column to 1e-9 relative (the contract asks for 1e-6)."""
    pd.testing.assert_frame_equal(a[["property", "layer", "head", *COUNTS]], b[["property", "layer", "head", *COUNTS]])
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12)


def assert_same_sums(a: Accumulator, b: Accumulator, rtol: float = 1e-9) -> None:
    assert a.sums.keys() == b.sums.keys()
    for name in a.sums:
        if "weight" not in name:  # arcs, hits, their null and bootstrap copies, backgrounds: counts
            np.testing.assert_array_equal(a.sums[name], b.sums[name], err_msg=name)
        else:
            np.testing.assert_allclose(a.sums[name], b.sums[name], rtol=rtol, atol=1e-12, err_msg=name)
    assert (a.n_proteins, a.n_residues) == (b.n_proteins, b.n_residues)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return str(tiny_bert(tmp_path_factory.mktemp("model") / "tiny-bert"))


@pytest.fixture(scope="module")
def proteins() -> list[Protein]:
    """Planted proteins of 20 to 62 residues, in an order unrelated to length."""
    base = planted_proteins(22, length=64, seed=3)
    lengths = np.random.default_rng(4).integers(20, 63, size=len(base))
    return [p.subset(slice(0, int(n))) for p, n in zip(base, lengths, strict=True)]


# -- engines ---------------------------------------------------------------------------------------------


def random_batches(seed: int, n_layers: int = 2, n_heads: int = 3):
    """Batches of random (sparse, sharp) attention over planted proteins, zero beyond each length."""
    rng = np.random.default_rng(seed)
    prots = planted_proteins(7, length=40, seed=seed)
    prots = [p.subset(slice(0, n)) for p, n in zip(prots, [40, 33, 25, 40, 12, 38, 30], strict=True)]
    batches = []
    for chunk, first in ((prots[:3], 0), (prots[3:], 3)):
        lengths = [len(p) for p in chunk]
        width = max(lengths)
        layers = []
        for _ in range(n_layers):
            attention = torch.zeros(len(chunk), n_heads, width, width)
            for b, n in enumerate(lengths):
                weights = rng.dirichlet(np.full(n, 0.1), size=(n_heads, n)).astype(np.float32)
                attention[b, :, :n, :n] = torch.from_numpy(weights) * 0.9  # rows below 1, as without specials
            layers.append(attention)
        batches.append((chunk, lengths, list(range(first, first + len(chunk))), layers))
    return batches


def accumulate(batches, engine: str, **kwargs) -> Accumulator:
    acc = Accumulator(2, 3, PROPERTIES, n_bootstrap=30, seed=11, engine=engine, **kwargs)
    for chunk, lengths, positions, layers in batches:
        batch = acc.start_batch(chunk, lengths, positions)
        for layer, attention in enumerate(layers):
            batch.add_layer(layer, attention)
        acc.commit(batch)
    return acc


def test_torch_engine_equals_numpy_engine_on_random_attention():
    batches = random_batches(0)
    numpy_acc, torch_acc = accumulate(batches, "numpy"), accumulate(batches, "torch")
    assert (numpy_acc.engine, torch_acc.engine) == ("numpy", "torch")
    assert numpy_acc.sums["arcs"].sum() > 100 and numpy_acc.sums["null_hits"].sum() > 0
    assert_same_sums(numpy_acc, torch_acc, rtol=1e-12)
    assert_same_heads(AnalysisResult(numpy_acc).heads(), AnalysisResult(torch_acc).heads())


def test_torch_engine_keeps_sums_on_the_device_until_read():
    acc = accumulate(random_batches(1), "torch")
    engine = acc._engine
    assert engine.totals["arcs"].abs().sum() > 0  # committed batches live on the device
    host = acc.sums
    assert host["arcs"].sum() > 0 and engine.totals["arcs"].abs().sum() == 0  # folded once, then zero
    before = host["arcs"].copy()
    np.testing.assert_array_equal(acc.sums["arcs"], before)  # a second read adds nothing


def test_uncommitted_batch_leaves_the_totals_untouched():
    acc = Accumulator(2, 3, PROPERTIES, n_bootstrap=5)
    chunk, lengths, positions, layers = random_batches(2)[0]
    batch = acc.start_batch(chunk, lengths, positions)
    batch.add_layer(0, layers[0])
    with pytest.raises(ValueError, match="without layers \\[2\\]"):
        acc.commit(batch)
    assert acc.n_proteins == 0 and all(not value.any() for value in acc.sums.values())
    with pytest.raises(ValueError, match="attention of shape"):
        batch.add_layer(1, layers[1][:, :2])


def test_engine_choice_and_errors():
    assert Accumulator(1, 1, ["aa_A"]).engine == "numpy"
    assert Accumulator(1, 1, ["aa_A"], engine="torch").engine == "torch"
    with pytest.raises(ValueError, match="engine must be"):
        Accumulator(1, 1, ["aa_A"], engine="jax")
    with pytest.raises(ValueError, match="numpy engine runs on the CPU"):
        Accumulator(1, 1, ["aa_A"], device="meta", engine="numpy")


def test_analyze_engines_agree_through_a_model(bert_dir, proteins):
    adapter = load_model(bert_dir)
    runs = [analyze(adapter, proteins, PROPERTIES, n_bootstrap=20, engine=e) for e in ("numpy", "torch")]
    assert runs[0].info["engine"] == "numpy" and runs[1].info["engine"] == "torch"
    assert runs[0].heads().n_arcs.sum() > 0
    assert_same_heads(runs[0].heads(), runs[1].heads())


# -- batching ----------------------------------------------------------------------------------------------


def test_pack_batches_respects_the_budget_and_keeps_long_items_alone():
    tokens = [50, 10, 400, 12, 11, 60, 58, 9]
    batches = pack_batches(tokens, max_tokens=120)
    assert sorted(k for batch in batches for k in batch) == list(range(len(tokens)))
    for batch in batches:
        padded = len(batch) * max(tokens[k] for k in batch)
        assert padded <= 120 or len(batch) == 1
    assert [2] in batches  # longer than the budget: alone
    assert batches[0] == [7, 1, 4, 3]  # shortest first, ties by position
    assert all(len(b) <= 2 for b in pack_batches(tokens, max_tokens=10_000, max_proteins=2))


def test_bucketed_batches_equal_one_protein_at_a_time(bert_dir, proteins):
    adapter = load_model(bert_dir)
    one = analyze(adapter, proteins, PROPERTIES, n_bootstrap=20, batch_size=1)
    small = analyze(adapter, proteins, PROPERTIES, n_bootstrap=20, max_tokens=150)
    large = analyze(adapter, proteins, PROPERTIES, n_bootstrap=20, max_tokens=4096)
    assert one.info["n_batches"] == len(proteins) and 1 < small.info["n_batches"] < len(proteins)
    assert large.info["padding_efficiency"] < small.info["padding_efficiency"] <= 1.0
    assert one.info["padding_efficiency"] == 1.0
    reference = one.heads()
    assert reference.n_arcs.sum() > 0
    for run in (small, large):
        assert_same_heads(reference, run.heads())
        assert_same_sums(one.accumulator, run.accumulator)


class OutOfMemoryAbove:
    """An adapter that runs out of memory on batches of more than `most` proteins (as a GPU would)."""

    def __init__(self, adapter, most: int, never: tuple[str, ...] = ()) -> None:
        self._adapter, self.most, self.never = adapter, most, never

    def __getattr__(self, name):
        return getattr(self._adapter, name)

    def iter_layers(self, batch, *args, **kwargs):
        if len(batch) > self.most or any(p.id in self.never for p in batch):
            layers = self._adapter.iter_layers(batch, *args, **kwargs)
            next(layers)  # a layer is staged before memory runs out: the batch must still not count
            layers.close()
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self._adapter.iter_layers(batch, *args, **kwargs)


def test_out_of_memory_splits_the_batch_and_retries(bert_dir, proteins):
    adapter = load_model(bert_dir)
    reference = analyze(adapter, proteins, PROPERTIES, n_bootstrap=20, max_tokens=4096)
    split = analyze(OutOfMemoryAbove(adapter, most=3), proteins, PROPERTIES, n_bootstrap=20, max_tokens=4096)
    assert split.info["oom_retries"] > 0 and split.info["n_skipped"] == 0
    assert_same_heads(reference.heads(), split.heads())
    # A protein that does not fit even alone is skipped and reported; the run goes on.
    alone = analyze(OutOfMemoryAbove(adapter, most=3, never=(proteins[5].id,)), proteins, PROPERTIES, n_bootstrap=0)
    assert alone.accumulator.n_proteins == len(proteins) - 1
    assert alone.info["n_skipped"] == 1 and "out of GPU memory" in alone.info["skipped"][0]["reason"]


# -- positions, shards, merge ------------------------------------------------------------------------------


def test_shards_sum_to_the_whole_run_and_merge_checks_them(bert_dir, proteins, tmp_path):
    adapter = load_model(bert_dir)
    records = [*proteins[:4], Skipped("bad.pdb", "A", "unreadable"), *proteins[4:]]
    kwargs = dict(n_bootstrap=20, source="synthetic", max_tokens=150)  # several batches for each shard
    whole = analyze(adapter, records, PROPERTIES, **kwargs)
    parts, counts = [], []
    for index in range(3):
        part = analyze(adapter, records, PROPERTIES, shard=Shard(index, 3), **kwargs)
        counts.append(part.accumulator.n_proteins)
        assert part.info["n_skipped"] == 1
        save_shard(part, tmp_path / f"part{index}")
        parts.append(tmp_path / f"part{index}")
    assert sum(counts) == len(proteins) and min(counts) > 0
    merged = merge_runs(parts[::-1])
    assert merged.accumulator.n_proteins == len(proteins) and merged.info["n_skipped"] == 1
    assert_same_sums(whole.accumulator, merged.accumulator)
    assert_same_heads(whole.heads(), merged.heads())
    assert merged.info["fingerprint"] == whole.info["fingerprint"]
    with pytest.raises(MergeError, match="shards 2/3 are missing"):
        merge_runs(parts[:2])
    with pytest.raises(MergeError, match="given twice"):
        merge_runs([*parts, parts[0]])
    other = analyze(adapter, records, PROPERTIES, seed=5, shard=Shard(2, 3), **kwargs)
    save_shard(other, tmp_path / "other")
    with pytest.raises(MergeError, match=r"not a shard of the same run.*seed"):
        merge_runs([*parts[:2], tmp_path / "other"])
    whole.save(tmp_path / "whole")
    with pytest.raises(MergeError, match="a whole run, not a shard"):
        merge_runs([tmp_path / "whole"])


def test_shard_parsing():
    assert Shard.parse("1/4") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"
    assert Shard(1, 2).within(Shard(1, 3)) == Shard(3, 6)
    assert [k for k in range(12) if Shard(1, 2).within(Shard(1, 3)).takes(k)] == [3, 9]
    for text in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            Shard.parse(text)


# -- checkpoints and resume --------------------------------------------------------------------------------


class StopAfter:
    """A progress callback that interrupts the run (as a signal would) after `batches` batches."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def __call__(self, state) -> None:
        if state.n_batches >= self.batches:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_a_checkpoint_and_resume_equals_an_uninterrupted_run(bert_dir, proteins, tmp_path):
    from plmlens.analysis import RunInterrupted

    adapter = load_model(bert_dir)
    records = [*proteins[:9], Skipped("bad.pdb", "A", "unreadable"), *proteins[9:]]
    kwargs = dict(n_bootstrap=20, max_tokens=150, source="synthetic", checkpoint=tmp_path / "ck.npz")
    reference = analyze(adapter, records, PROPERTIES, **{**kwargs, "checkpoint": None})
    for batches in (2, 3):  # two interruptions, then the rest
        with pytest.raises(RunInterrupted) as stopped:
            analyze(adapter, records, PROPERTIES, resume=True, progress=StopAfter(batches), **kwargs)
        assert stopped.value.exit_code == 143 and (tmp_path / "ck.npz").exists()
        assert 0 < stopped.value.n_proteins < len(proteins)
    resumed = analyze(adapter, records, PROPERTIES, resume=True, **kwargs)
    assert resumed.info["n_skipped"] == 1  # the skipped record is not counted again on resume
    assert resumed.info["n_batches"] > reference.info["n_batches"] - 1
    assert_same_sums(reference.accumulator, resumed.accumulator)
    assert_same_heads(reference.heads(), resumed.heads())


def test_checkpoint_mismatch_and_damage_are_one_line_errors(bert_dir, proteins, tmp_path):
    adapter = load_model(bert_dir)
    path = tmp_path / "ck.npz"
    analyze(adapter, proteins[:4], PROPERTIES, n_bootstrap=5, checkpoint=path, source="synthetic")
    with pytest.raises(CheckpointError, match=r"belongs to another run \(settings.seed: 123 there, 9 here\)"):
        analyze(adapter, proteins[:4], PROPERTIES, n_bootstrap=5, seed=9, checkpoint=path, resume=True,
                source="synthetic")  # fmt: skip
    with pytest.raises(CheckpointError, match="source: 'synthetic' there, 'other' here"):
        analyze(adapter, proteins[:4], PROPERTIES, n_bootstrap=5, checkpoint=path, resume=True, source="other")
    for damage, message in (
        (b"not a zip file at all", "unreadable checkpoint"),
        (path.read_bytes()[:200], "unreadable checkpoint"),
    ):
        path.write_bytes(damage)
        with pytest.raises(CheckpointError, match=message) as error:
            analyze(adapter, proteins[:4], PROPERTIES, n_bootstrap=5, checkpoint=path, resume=True,
                    source="synthetic")  # fmt: skip
        assert "\n" not in str(error.value) and str(path) in str(error.value)
    Accumulator(1, 1, ["aa_A"]).save(path)  # an accumulator, not a checkpoint
    with pytest.raises(CheckpointError, match="not a plmlens analyze checkpoint"):
        load_checkpoint(path, {})


def test_checkpoint_round_trip(tmp_path):
    acc = accumulate(random_batches(3), "numpy")
    skipped = [{"record": 3, "file": "f", "chain": None, "reason": "unreadable"}]  # as run.py records a skip
    progress = Progress(complete_below=5, done={7, 9}, skipped=skipped, counters={"tokens": 10})
    save_checkpoint(tmp_path / "c.npz", acc, {"a": 1}, progress)
    loaded, again = load_checkpoint(tmp_path / "c.npz", {"a": 1})
    assert_same_sums(acc, loaded, rtol=0)
    assert again == progress and again.is_done(4) and again.is_done(9) and not again.is_done(8)


# -- devices and dtypes ------------------------------------------------------------------------------------


def test_device_and_dtype_resolution(bert_dir, proteins):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype(None, torch.device("cpu")) is None  # as stored
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_model(bert_dir, device="cuda")
    adapter = load_model(bert_dir, dtype="bfloat16")
    assert adapter.dtype == torch.bfloat16 and adapter.device.type in ("cpu", "cuda")
    layer = next(iter(adapter.iter_layers(proteins[:2], hidden_states=True)))
    assert layer.attention.dtype == torch.float32 and layer.hidden.dtype == torch.float32  # statistics in fp32
    result = analyze(adapter, proteins[:6], PROPERTIES, n_bootstrap=0)
    assert result.info["dtype"] == "bfloat16" and result.info["fingerprint"]["model"]["dtype"] == "bfloat16"
    full = analyze(load_model(bert_dir), proteins[:6], PROPERTIES, n_bootstrap=0)
    # bf16 changes the forward pass (this random model's sharp attention amplifies it layer by layer), not
    # the bookkeeping
    assert result.accumulator.n_residues == full.accumulator.n_residues
    first = (slice(None), 0)
    low, high = result.accumulator.sums["weight"][first], full.accumulator.sums["weight"][first]
    np.testing.assert_allclose(low, high, rtol=0.05)


@pytest.mark.integration
def test_torch_engine_equals_numpy_on_antiberty(shared_data):
    adapter = load_model("antiberty")
    records = list(iter_records(f"{shared_data / 'antibodies'}::variable_domain,limit=12"))
    numpy_run = analyze(adapter, records, ["default", "contact_ranges"], n_bootstrap=50, engine="numpy")
    torch_run = analyze(adapter, records, ["default", "contact_ranges"], n_bootstrap=50, engine="torch")
    assert numpy_run.accumulator.n_proteins == 12 and numpy_run.heads().n_arcs.sum() > 1000
    assert_same_sums(numpy_run.accumulator, torch_run.accumulator)
    assert_same_heads(numpy_run.heads(), torch_run.heads())


def test_synthetic_structures_fixture_reads(tmp_path):
    directory = synthetic_structures(tmp_path / "s", 3)
    records = list(iter_records(f"{directory}::dssp=false"))
    assert sum(isinstance(r, Protein) for r in records) == 3 and sum(isinstance(r, Skipped) for r in records) == 1
    assert random_walk(5, np.random.default_rng(0)).shape == (5, 3)
