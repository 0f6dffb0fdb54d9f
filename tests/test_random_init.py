"""Random-weight controls: ``load_model(..., random_init=True, seed=...)`` and ``--random-init``.

Tiny models of every architecture family are saved with weights moved away from anything an initialisation
would draw (LayerNorm weights above 1, biases above 0), so that a parameter left untouched by the random
initialisation shows up as equal to its checkpoint value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import transformers
from typer.testing import CliRunner

from models_fixtures import antibody_chains
from plmlens.analysis import CheckpointError, analyze
from plmlens.cli import app
from plmlens.models import ModelAdapter, ModelLoadError, load_model
from plmlens.models.adapter import HookSpec, _reinitialise
from plmlens.models.tokenizers import from_hf_tokenizer
from plmlens.probing import probe
from plmlens.proteins import Protein, iter_records
from scale_fixtures import synthetic_structures, tiny_bert
from test_models import KINDS, _build

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "GGSWLK", "EVQLVESGGGLVQPGG"]


def save_tiny(kind: str, directory: Path, *, shift: bool = True) -> tuple[Path, bool]:
    """A tiny model of one architecture family saved with `save_pretrained`: (directory, spaced).

    With `shift`, every parameter is moved by 0.1 to 0.2 before saving, standing in for trained weights.
    """
    directory.mkdir(parents=True, exist_ok=True)
    model, tokenizer, spaced, _ = _build(kind, directory)
    if shift:
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.1 + 0.1 * torch.rand(parameter.shape, generator=generator))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, spaced


@pytest.fixture(scope="module", params=KINDS)
def shifted(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, save_tiny(request.param, tmp_path_factory.mktemp(request.param))[0]


def parameters(adapter: ModelAdapter) -> dict[str, torch.Tensor]:
    owner = adapter.lm_model if adapter.lm_model is not None else adapter.model
    return {name: p.detach().clone() for name, p in owner.named_parameters()}


def test_random_init_redraws_every_parameter_seeded(shifted):
    kind, directory = shifted
    rng_before = torch.random.get_rng_state()
    pretrained = load_model(directory, device="cpu")
    first = load_model(directory, device="cpu", random_init=True, seed=0)
    again = load_model(directory, device="cpu", random_init=True, seed=0)
    other = load_model(directory, device="cpu", random_init=True, seed=1)
    # The caller's random state is left alone.
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    loaded, drawn, same_seed, other_seed = (parameters(a) for a in (pretrained, first, again, other))
    assert loaded.keys() == drawn.keys() and len(loaded) > 10
    for name, weights in loaded.items():
        assert drawn[name].shape == weights.shape and drawn[name].dtype == weights.dtype, name
        assert not (drawn[name] == weights).any(), f"{kind}: {name} kept checkpoint values"
        assert torch.isfinite(drawn[name]).all(), name
        torch.testing.assert_close(same_seed[name], drawn[name], rtol=0, atol=0)
        varied = drawn[name].numel() > 1 and bool(drawn[name].std() > 0)  # drawn, not set to ones or zeros
        if varied:
            assert not torch.equal(other_seed[name], drawn[name]), f"{kind}: {name} ignores the seed"
    assert any(not torch.equal(other_seed[n], drawn[n]) for n in drawn)
    # Architecture, config, tokenizer and hooks stay.
    assert first.model.config.to_dict() == pretrained.model.config.to_dict()
    assert first.model.config._attn_implementation == "eager"
    assert (first.n_layers, first.n_heads, first.n_params) == (pretrained.n_layers, pretrained.n_heads,
                                                               pretrained.n_params)  # fmt: skip
    assert first.tokenizer.residue_ids == pretrained.tokenizer.residue_ids
    assert torch.equal(first.encode(SEQUENCES).input_ids, pretrained.encode(SEQUENCES).input_ids)
    random_layers = list(first.iter_layers(SEQUENCES, hidden_states=True))
    pretrained_layers = list(pretrained.iter_layers(SEQUENCES, hidden_states=True))
    assert [out.layer for out in random_layers] == list(range(first.n_layers))
    for mine, theirs in zip(random_layers, pretrained_layers, strict=True):
        assert mine.attention.shape == theirs.attention.shape and float(mine.attention.sum(-1).max()) <= 1 + 1e-5
        assert not torch.allclose(mine.attention, theirs.attention)
    # The adapter records it.
    assert (pretrained.random_init, pretrained.init_seed) == (False, None)
    assert (first.random_init, first.init_seed, other.init_seed) == (True, 0, 1)
    assert "random_init=True, init_seed=0" in repr(first) and "random_init" not in repr(pretrained)


def test_language_model_head_is_redrawn_and_stays_tied(tmp_path):
    torch.manual_seed(0)
    directory = tiny_bert(tmp_path / "bert")
    config = transformers.BertConfig.from_pretrained(directory)
    lm = transformers.BertForMaskedLM(config)
    with torch.no_grad():
        for parameter in lm.parameters():
            parameter.add_(0.5)
    tokenizer = from_hf_tokenizer(transformers.AutoTokenizer.from_pretrained(directory), spaced=True, name="bert")
    hooks = HookSpec("BertLayer", "BertSelfAttention", 1)
    adapter = ModelAdapter(name="bert-lm", architecture="BERT", model=lm.bert, tokenizer=tokenizer, hooks=hooks,
                           max_length=256, lm_model=lm)  # fmt: skip
    before = parameters(adapter)
    adapter.randomize_weights(5)
    after = parameters(adapter)
    head = [name for name in before if name.startswith("cls.")]
    assert head and all(not (after[name] == before[name]).any() for name in before)
    assert lm.cls.predictions.decoder.weight is lm.bert.embeddings.word_embeddings.weight
    assert adapter.residue_log_probs(["MKTAYIAK"])[0].shape == (8, 20)


def test_modules_outside_transformers_fall_back_to_reset_parameters():
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(7.0)
    torch.manual_seed(0)
    _reinitialise(module, "plain")
    assert all(not (p == 7.0).any() for p in module.parameters())
    torch.testing.assert_close(module[1].weight, torch.ones(3))

    class Bare(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(2))

    with pytest.raises(ModelLoadError, match="nothing re-initialises parameter scale"):
        _reinitialise(Bare(), "bare")


# -- analyze and probe ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharp_bert(tmp_path_factory) -> Path:
    """A tiny BERT whose saved weights are sharp (std 2, some attention above θ) while its config asks for
    std 0.02 at initialisation, as real models do: random weights then attend almost uniformly."""
    directory = tiny_bert(tmp_path_factory.mktemp("sharp") / "bert")
    config = json.loads((directory / "config.json").read_text())
    config["initializer_range"] = 0.02
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def structures(tmp_path_factory) -> str:
    return f"{synthetic_structures(tmp_path_factory.mktemp('structures'), 5)}::dssp=false"


def test_random_weights_follow_the_models_own_initialisation(sharp_bert):
    # BERT draws N(0, initializer_range) for linear and embedding weights and sets LayerNorm to 1 and 0;
    # torch's own defaults (kaiming-uniform linears, N(0, 1) embeddings) would be far from std 0.02.
    adapter = load_model(sharp_bert, device="cpu", random_init=True, seed=0)
    for name, weights in parameters(adapter).items():
        if "LayerNorm" in name:
            expected = torch.ones_like(weights) if name.endswith("weight") else torch.zeros_like(weights)
            torch.testing.assert_close(weights, expected, rtol=0, atol=0)
        elif name.endswith("weight"):
            assert 0.015 < float(weights.std()) < 0.025, name
        else:
            assert not weights.any(), name


def _analyze(model: Path, data: str, out: Path, *extra: str):
    args = ["analyze", "--model", str(model), "--data", data, "--out", str(out), "--n-bootstrap", "0",
            "--properties", "contact,binding_site,aa_A", "--device", "cpu", *extra]  # fmt: skip
    return CliRunner().invoke(app, args)


def test_cli_analyze_random_init_is_recorded_and_has_no_arcs(sharp_bert, structures, tmp_path):
    pretrained = _analyze(sharp_bert, structures, tmp_path / "pretrained")
    assert pretrained.exit_code == 0, pretrained.output
    random = _analyze(sharp_bert, structures, tmp_path / "random", "--random-init", "--init-seed", "3")
    assert random.exit_code == 0, random.output
    summaries = {run: json.loads((tmp_path / run / "summary.json").read_text()) for run in ("pretrained", "random")}
    for run, flag, seed in (("pretrained", False, None), ("random", True, 3)):
        summary = summaries[run]
        assert summary["model"]["random_init"] is flag and summary["model"]["init_seed"] == seed
        assert summary["fingerprint"]["model"]["random_init"] is flag
        assert summary["fingerprint"]["model"]["init_seed"] == seed
        heads = pd.read_csv(tmp_path / run / "heads.csv")
        # Every property is defined on every pair here (all residues have coordinates).
        assert summary["n_arcs_total"] == heads[heads.property == "contact"].n_arcs.sum()
    assert summaries["pretrained"]["n_arcs_total"] > 100
    assert summaries["random"]["n_arcs_total"] == 0
    assert "random weights (seed 3): 0 high-confidence arcs" in random.output
    assert "high-confidence arcs" not in pretrained.output


def test_resuming_a_pretrained_checkpoint_into_random_weights_is_refused(sharp_bert, structures, tmp_path):
    proteins = [p for p in iter_records(structures) if isinstance(p, Protein)]
    checkpoint = tmp_path / "checkpoint.npz"
    settings = dict(n_bootstrap=0, source="synthetic", checkpoint=checkpoint)
    analyze(load_model(sharp_bert, device="cpu"), proteins, ["contact"], **settings)
    assert checkpoint.exists()
    random = load_model(sharp_bert, device="cpu", random_init=True)
    with pytest.raises(CheckpointError, match=r"model\.init_seed: None there, 0 here; model\.random_init: False"):
        analyze(random, proteins, ["contact"], resume=True, **settings)
    # The same refusal through the command line, with the checkpoint where `analyze --out` keeps it.
    out = tmp_path / "run"
    out.mkdir()
    analyze(load_model(sharp_bert, device="cpu"), proteins, ["contact", "binding_site", "aa_A"], n_bootstrap=0,
            source=structures, checkpoint=out / "checkpoint.npz")  # fmt: skip
    refused = _analyze(sharp_bert, structures, out, "--random-init", "--resume")
    assert refused.exit_code == 2 and "model.random_init: False there, True here" in refused.output
    assert "Traceback" not in refused.output
    # A finished pretrained run is not taken for the random-weights one either.
    assert _analyze(sharp_bert, structures, tmp_path / "done").exit_code == 0
    finished = _analyze(sharp_bert, structures, tmp_path / "done", "--random-init", "--resume")
    assert finished.exit_code == 2 and "model.random_init" in finished.output


def test_probe_records_random_init(sharp_bert, structures, tmp_path):
    proteins = [p for p in iter_records(structures) if isinstance(p, Protein)]
    result = probe(load_model(sharp_bert, device="cpu", random_init=True, seed=2), proteins, ["contact"],
                   train_fraction=0.6, max_train_pairs=400)  # fmt: skip
    assert result.info["model"]["random_init"] is True and result.info["model"]["init_seed"] == 2
    out = tmp_path / "probe"
    args = ["probe", "--model", str(sharp_bert), "--data", structures, "--out", str(out), "--tasks", "contact",
            "--device", "cpu", "--random-init", "--init-seed", "4"]  # fmt: skip
    cli = CliRunner().invoke(app, args)
    assert cli.exit_code == 0, cli.output
    model = json.loads((out / "summary.json").read_text())["model"]
    assert model["random_init"] is True and model["init_seed"] == 4
    pretrained = probe(load_model(sharp_bert, device="cpu"), proteins, ["contact"], train_fraction=0.6,
                       max_train_pairs=400)  # fmt: skip
    assert pretrained.info["model"]["random_init"] is False and pretrained.info["model"]["init_seed"] is None


# -- the real model ------------------------------------------------------------------------------------


def high_confidence_arcs(adapter: ModelAdapter, sequences: list[str], threshold: float = 0.3) -> int:
    """Attention weights above θ between residues, over every layer and head."""
    return sum(int((out.attention > threshold).sum()) for out in adapter.iter_layers(sequences, hidden_states=False))


@pytest.mark.integration
def test_antiberty_random_weights_have_almost_no_high_confidence_arcs():
    # load_model raises (the test fails, never skips) when the antiberty wheel is missing.
    sequences = [chain.sequence for chain in antibody_chains(limit=8)]
    assert len(sequences) == 8
    pretrained = high_confidence_arcs(load_model("antiberty", device="cpu"), sequences)
    random = high_confidence_arcs(load_model("antiberty", device="cpu", random_init=True, seed=0), sequences)
    # Measured: 11,207 pretrained, 0 random (the paper found none above θ with random weights).
    assert pretrained > 5_000
    assert random < pretrained / 100
