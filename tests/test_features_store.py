"""Activation stores (`plmlens.features.store`), `ModelAdapter.layer_states`, SAE fidelity and the synthetic
repertoire, on tiny random models."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from plmlens.features import store as store_module
from plmlens.features.fidelity import fidelity, masked_positions
from plmlens.features.store import ActivationStore, ExtractionInterrupted, StoreError, extract
from plmlens.models import load_model
from plmlens.models.tokenizers import STANDARD_RESIDUES
from plmlens.proteins import Protein, Skipped
from plmlens.proteins.repertoire import synthetic_repertoire, write_repertoire_fasta
from scale_fixtures import tiny_bert, tiny_gpt2

LETTERS = list("ACDEFGHIKLMNPQRSTVWY")


def _proteins(n: int, seed: int = 0) -> list[Protein]:
    rng = np.random.default_rng(seed)
    return [Protein(f"p{i}", "".join(rng.choice(LETTERS, size=int(rng.integers(15, 70))))) for i in range(n)]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return load_model(str(tiny_bert(tmp_path_factory.mktemp("bert"), layers=3)), device="cpu")


@pytest.fixture(scope="module")
def bert_lm(tmp_path_factory):
    path = tiny_bert(tmp_path_factory.mktemp("bert_lm"), layers=2, lm_head=True)
    return load_model(str(path), device="cpu", lm_head=True)


def test_layer_states_equal_the_embedding_and_stop_after_the_last_layer(bert):
    proteins = _proteins(3)
    encoding = bert.encode(proteins)
    calls = []
    with bert.attach_hooks([("blocks.2.resid_post", lambda value, point: calls.append(point.layer))]):
        states = bert.layer_states(encoding, [0, 1])
    assert calls == []  # layer 2 never ran
    for layer in (0, 1):
        expected = bert.embed(proteins, layer=layer)
        for got, want in zip(states[layer], expected, strict=True):
            np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    with pytest.raises(ValueError, match=r"layers must be within 0\.\.2"):
        bert.layer_states(encoding, [3])


def test_extract_stores_every_residue_of_the_chosen_layers_in_source_order(bert, tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "PART_RESIDUES", 200)  # several parts
    proteins = _proteins(12)
    records = [*proteins[:5], Skipped("file.pdb", "B", "unreadable"), *proteins[5:]]
    record = extract(bert, records, [1, 3], tmp_path / "store", max_tokens=300)
    store = ActivationStore(tmp_path / "store")
    assert record["n_proteins"] == 12 and record["layers"] == [1, 3] and record["d"] == 32
    assert record["n_residues"] == sum(len(p) for p in proteins)
    assert [s["chain"] for s in record["skipped"]] == ["B"]
    assert store.index["id"].tolist() == [p.id for p in proteins]
    assert store.index["part"].nunique() > 1
    by_id = dict(store.proteins(3))
    for protein in proteins:
        want = bert.embed([protein], layer=2)[0]
        np.testing.assert_allclose(by_id[protein.id], want, atol=2e-3 * np.abs(want).max())  # float16
    everything = store.tokens(1).read(0, store.tokens(1).n_tokens)
    assert everything.shape == (record["n_residues"], 32) and everything.dtype == np.float32
    np.testing.assert_array_equal(store.tokens(1).read(150, 450), everything[150:450])  # across parts


def test_an_interrupted_extraction_resumed_equals_an_uninterrupted_one(bert, tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "PART_RESIDUES", 150)
    proteins = _proteins(30, seed=1)
    extract(bert, proteins, [2], tmp_path / "whole", max_tokens=256)
    batches = {"n": 0}

    def stop_after_four(state) -> None:
        batches["n"] += 1
        if batches["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(ExtractionInterrupted) as stopped:
        extract(bert, proteins, [2], tmp_path / "cut", max_tokens=256, progress=stop_after_four, checkpoint_seconds=0)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert not (tmp_path / "cut" / "activations.json").exists()
    extract(bert, proteins, [2], tmp_path / "cut", max_tokens=256, resume=True)
    whole, cut = ActivationStore(tmp_path / "whole"), ActivationStore(tmp_path / "cut")
    np.testing.assert_array_equal(cut.tokens(2).read(0, 10**9), whole.tokens(2).read(0, 10**9))
    assert cut.index[["id", "position", "length"]].equals(whole.index[["id", "position", "length"]])
    with pytest.raises(ValueError, match="other settings"):
        extract(bert, proteins, [1], tmp_path / "cut", max_tokens=256, resume=True)


def test_bfloat16_storage_reads_back_as_float32(bert, tmp_path):
    proteins = _proteins(3)
    extract(bert, proteins, [1], tmp_path / "bf", dtype="bfloat16")
    store = ActivationStore(tmp_path / "bf")
    want = bert.embed([proteins[0]], layer=0)[0]
    got = dict(store.proteins(1))["p0"]
    np.testing.assert_allclose(got, want, atol=1e-2 * np.abs(want).max())
    with pytest.raises(ValueError, match="dtype must be one of"):
        extract(bert, proteins, [1], tmp_path / "x", dtype="int8")


def test_damaged_stores_are_one_line_errors(bert, tmp_path):
    extract(bert, _proteins(3), [1], tmp_path / "s")
    with pytest.raises(StoreError, match="layer 2 was not extracted"):
        ActivationStore(tmp_path / "s").tokens(2)
    part = next((tmp_path / "s" / "parts").glob("L1.*.npy"))
    part.unlink()
    with pytest.raises(StoreError, match=r"\.npy: missing"):
        ActivationStore(tmp_path / "s").tokens(1)
    (tmp_path / "s" / "index.csv").write_text("nonsense\n1\n")
    with pytest.raises(StoreError, match=r"index\.csv: damaged"):
        ActivationStore(tmp_path / "s")
    (tmp_path / "s" / "activations.json").write_text("{")
    with pytest.raises(StoreError, match=r"activations\.json: unreadable"):
        ActivationStore(tmp_path / "s")
    with pytest.raises(StoreError, match="missing"):
        ActivationStore(tmp_path / "nothing")


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x, x


class _Zeros(torch.nn.Module):
    def forward(self, x):
        return torch.zeros_like(x), x


def _hand_loss(adapter, proteins, seed: int) -> float:
    """Mean NLL of the masked true residues, each protein run alone."""
    columns = {c: k for k, c in enumerate(STANDARD_RESIDUES)}
    total, count = 0.0, 0
    for index, protein in enumerate(proteins):
        mask = masked_positions(index, len(protein), seed)
        log_probs = adapter.residue_log_probs([protein], masked=[mask])[0]
        total += -sum(float(log_probs[i, columns[protein.sequence[i]]]) for i in mask)
        count += len(mask)
    return total / count


def test_fidelity_by_hand(bert_lm):
    proteins = _proteins(5, seed=2)
    identity = fidelity(bert_lm, _Identity(), proteins, 1, mean=np.zeros(32, np.float32), seed=3, batch_size=1)
    assert identity["loss_intact"] == pytest.approx(_hand_loss(bert_lm, proteins, 3), rel=1e-6)
    assert identity["loss_sae"] == identity["loss_intact"]
    assert identity["loss_recovered_zero"] == pytest.approx(1.0)
    assert identity["loss_recovered_mean"] == pytest.approx(1.0)
    assert identity["loss_mean"] == pytest.approx(identity["loss_zero"])  # a zero mean is the zero ablation
    zeros = fidelity(bert_lm, _Zeros(), proteins, 1, seed=3, batch_size=2)
    assert zeros["loss_sae"] == pytest.approx(zeros["loss_zero"]) and zeros["loss_recovered_zero"] == 0.0
    assert zeros["loss_mean"] is None and zeros["loss_recovered_mean"] is None
    assert zeros["residues_scored"] == sum(max(1, round(0.15 * len(p))) for p in proteins)


def test_fidelity_of_a_causal_model_scores_every_residue(tmp_path):
    adapter = load_model(str(tiny_gpt2(tmp_path / "gpt", lm_head=True)), device="cpu", lm_head=True)
    proteins = _proteins(3, seed=4)
    result = fidelity(adapter, _Identity(), proteins, 2, mean=np.ones(32, np.float32))
    assert result["residues_scored"] == sum(len(p) for p in proteins)
    assert result["loss_recovered_mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"layers 1\.\.2"):
        fidelity(adapter, _Identity(), proteins, 3)


def test_synthetic_repertoire_is_seeded_and_numbered_as_what_it_is(tmp_path):
    first, again = list(synthetic_repertoire(60, seed=5)), list(synthetic_repertoire(60, seed=5))
    assert first == again and first != list(synthetic_repertoire(60, seed=6))
    assert {c.chain_type for c in first} == {"heavy", "light"}
    assert all(90 <= len(c.sequence) <= 140 and set(c.sequence) <= set(LETTERS) for c in first)
    from plmlens.proteins.numbering import ChainNumbering, number_sequences

    numbered = number_sequences([(c.id, c.sequence) for c in first])
    pairs = zip(numbered, first, strict=True)
    agree = [n.chain_type == c.chain_type for n, c in pairs if isinstance(n, ChainNumbering)]
    assert len(agree) >= 57 and all(agree)
    path = write_repertoire_fasta(tmp_path / "rep.fasta", 4, seed=5)
    lines = path.read_text().splitlines()
    assert lines[0].startswith(">syn5-0 chain_type=") and lines[1] == first[0].sequence and len(lines) == 8
    assert json.dumps([c.mutations for c in first])  # plain ints
