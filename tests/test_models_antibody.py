"""Real pretrained antibody models shipped in PyPI wheels, on real antibody sequences.

These fail (never skip) when a wheel or the shared antibody structures are missing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models_fixtures import AntibodyChain, antibody_chains, mask_positions
from plmlens.models import STANDARD_RESIDUES, ModelAdapter, load_model, registry_rows
from plmlens.models.antibody import package_dir

pytestmark = pytest.mark.integration

#: Fully human antibodies of the benchmark (human donors, transgenic mice or human libraries; no
#: humanised ones, whose CDRs are murine). Sapiens was trained on human repertoires only and scores
#: murine and camelid chains low by design (it is a humanisation model), so it is tested on these.
FULLY_HUMAN = {
    "3WD5",  # adalimumab
    "3HMX",  # ustekinumab
    "4G6J",  # canakinumab
    "5Y9J",  # belimumab
    "5GRJ",  # avelumab
    "3EO1",  # fresolimumab (GC-1008)
    "2DD8",  # m396
    "4FQI",  # CR9114
    "4M5Z",  # 5J8
    "6OC3",  # FluA-20
    "5C7X",  # MOR04357
    "4DN4",  # carlumab (CNTO888)
    "3G6D",  # CNTO607
    "2FJG",  # G6
}


@pytest.fixture(scope="module")
def chains() -> list[AntibodyChain]:
    found = antibody_chains()
    assert len(found) >= 60, f"only {len(found)} antibody variable domains read from the shared data"
    return found


def masked_recovery(adapter: ModelAdapter, chains: list[AntibodyChain], rounds: int = 1, seed: int = 0) -> float:
    """Fraction of 15% randomly masked residues (seeded) whose most likely residue is the true one.

    Each round masks a fresh random 15% of every chain; rounds are pooled, for a steadier estimate on
    few chains.
    """
    generator = torch.Generator().manual_seed(seed)
    correct = total = 0
    for start in [s for _ in range(rounds) for s in range(0, len(chains), 8)]:
        batch = chains[start : start + 8]
        masks = [mask_positions(len(c.sequence), 0.15, generator) for c in batch]
        log_probs = adapter.residue_log_probs([c.sequence for c in batch], [c.id for c in batch], masked=masks)
        for chain, mask, lp in zip(batch, masks, log_probs, strict=True):
            predicted = lp[mask].argmax(-1)
            correct += sum(STANDARD_RESIDUES[p] == chain.sequence[i] for p, i in zip(predicted, mask, strict=True))
            total += len(mask)
    return correct / total


def perplexity(adapter: ModelAdapter, sequence: str) -> float:
    """exp of the mean negative log-likelihood of each residue given the tokens before it."""
    log_probs = adapter.residue_log_probs([sequence])[0]
    truth = [STANDARD_RESIDUES.index(c) for c in sequence]
    return float(np.exp(-log_probs[np.arange(len(sequence)), truth].mean()))


def test_wheels_are_installed():
    for package, requirement in (("antiberty", "antiberty==0.1.3"), ("sapiens", "sapiens==1.0.5")):
        assert package_dir(package, requirement, package).is_dir()
    assert package_dir("iglm", "iglm==0.1.0", "iglm").is_dir(), "pip install --no-deps iglm==0.1.0"


def test_antiberty_vocabulary_and_shape():
    vocab = (package_dir("antiberty", "antiberty==0.1.3", "antiberty") / "trained_models" / "vocab.txt").read_text()
    tokens = vocab.split()
    assert tokens[2:5] == ["[CLS]", "[SEP]", "[MASK]"]
    assert tokens[5:25] == list("ACDEFGHIKLMNPQRSTVWY")
    adapter = load_model("antiberty")
    assert adapter.tokenizer.residue_ids["A"] == 5 and adapter.tokenizer.residue_ids["Y"] == 24
    assert adapter.tokenizer.prefix == (2,) and adapter.tokenizer.suffix == (3,)


@pytest.mark.parametrize("name", ["antiberty", "sapiens-heavy", "sapiens-light", "iglm", "iglm-s"])
def test_wheel_models_match_their_registry_rows(name):
    row = next(r for r in registry_rows() if r["name"] == name)
    adapter = load_model(name)
    assert (adapter.n_layers, adapter.n_heads, adapter.n_params) == (
        row["layers"],
        row["heads"],
        row["parameters"],
    )
    layers = list(adapter.iter_layers(["EVQLVESGGGLVQPGGSLRLSCAASGFTFS", "DIQMTQSPSS"], hidden_states=False))
    assert len(layers) == row["layers"]
    assert layers[0].attention.shape == (2, row["heads"], 30, 30)
    if adapter.causal:
        # Left-to-right: nothing attends to a later residue.
        assert float(torch.triu(layers[0].attention[0], diagonal=1).abs().max()) == 0.0


def test_antiberty_recovers_masked_residues(chains):
    # Heavy and light chains of mouse, human and camelid antibodies: AntiBERTy was trained on all of them.
    subset = chains[:40]
    assert masked_recovery(load_model("antiberty"), subset) >= 0.80


@pytest.mark.parametrize("chain_type", ["heavy", "light"])
def test_sapiens_recovers_masked_residues_of_human_antibodies(chains, chain_type):
    human = [c for c in chains if c.id[:4] in FULLY_HUMAN and c.chain_type == chain_type]
    assert len(human) >= 10
    assert masked_recovery(load_model(f"sapiens-{chain_type}"), human, rounds=5) >= 0.80


def test_iglm_prefers_real_antibodies_to_shuffled_ones(chains):
    rng = np.random.default_rng(0)
    for chain_type in ("heavy", "light"):
        adapter = load_model("iglm", chain=chain_type)
        chain = next(c for c in chains if c.chain_type == chain_type)
        shuffled = "".join(rng.permutation(list(chain.sequence)))
        real, control = perplexity(adapter, chain.sequence), perplexity(adapter, shuffled)
        assert real < 5 and control > 4 * real, (chain.id, real, control)
