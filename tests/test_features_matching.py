"""`plmlens features`: concept matching end to end on planted features, and the commands on a tiny model."""

from __future__ import annotations

import json
import re
import subprocess
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from plmlens.cli import app
from plmlens.features.matching import match_concepts, verdict
from plmlens.features.store import ActivationStore
from plmlens.proteins import Protein
from plmlens.rundir import FeatureDir
from scale_fixtures import tiny_bert

AMINO = "ACDEFGHIKLMNPQRSTVWY"


class _OneHotStore:
    """A stand-in for an activation store whose states are each residue's one-hot amino acid (20 dims) and 4
    dims of noise."""

    def __init__(self, proteins: list[Protein], seed: int = 0) -> None:
        self.d = 24
        self.index = pd.DataFrame({"id": [p.id for p in proteins]})
        rng = np.random.default_rng(seed)
        self.states = {}
        for p in proteins:
            one_hot = np.eye(20, dtype=np.float32)[[AMINO.index(c) for c in p.sequence]]
            self.states[p.id] = np.hstack([one_hot, rng.normal(size=(len(p), 4)).astype(np.float32)])

    def proteins(self, layer: int):
        yield from self.states.items()


class _PlantedSae(torch.nn.Module):
    """Feature j is amino acid j (the first 20 state dimensions); features 20..23 never fire."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(width=24)
        self.W_dec = torch.nn.Parameter(torch.zeros(24, 24))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(x[:, :20]), torch.zeros(len(x), 4)], dim=1)


def _random_proteins(n: int, seed: int) -> list[Protein]:
    rng = np.random.default_rng(seed)
    return [Protein(f"q{i}", "".join(rng.choice(list(AMINO), size=int(rng.integers(30, 60))))) for i in range(n)]


def test_planted_amino_acid_features_are_matched_and_the_controls_are_not():
    proteins = _random_proteins(40, seed=1)
    store = _OneHotStore(proteins)
    names = [f"aa_{a}" for a in AMINO]
    result = match_concepts(_PlantedSae(), store, 1, {p.id: p for p in proteins}, names=names, seed=3,
                            numbered=False)  # fmt: skip
    summary = result.summary
    assert summary["matched_concepts"]["features"] == 20 and summary["matched_beyond_position"]["features"] == 20
    assert summary["matched_concepts"]["shuffled"] == 0  # random sequences: another protein's residues are unrelated
    assert summary["matched_concepts"]["position"] == 0
    # A neuron is the amino acid too (in its positive sign): neurons match as features do here.
    assert summary["matched_concepts"]["neurons"] == 20
    assert summary["beyond_controls"] == names
    assert verdict(summary) == f"Matched above every control (shuffled concepts, position alone): {', '.join(names)}."
    concepts = result.concepts.set_index("concept")
    for j, letter in enumerate(AMINO):
        assert concepts.loc[f"aa_{letter}", "feature"] == j and concepts.loc[f"aa_{letter}", "f1"] == 1.0
        assert concepts.loc[f"aa_{letter}", "neuron"] == f"{j}+"
    features = result.features.set_index("feature")
    assert features.loc[3, "concept"] == "aa_E" and bool(features.loc[3, "matched"])
    assert not features.loc[[20, 21, 22, 23], "matched"].any()  # never fire
    assert features.loc[20, "frequency"] == 0.0
    total = sum(len(p) for p in proteins)
    assert features.loc[0, "frequency"] == pytest.approx(sum(p.sequence.count("A") for p in proteins) / total)
    splits = summary["n_proteins"]
    assert splits["validation"] + splits["test"] == 40 and min(splits.values()) > 5
    # The browser's examples: a planted feature's top protein holds its amino acid, activation 1 there.
    example = next(e for e in result.examples["features"] if e["feature"] == 0)
    top = example["top"][0]
    assert top["max"] == 1.0 and len(top["activations"]) == len(top["sequence"])
    assert [a for a, c in zip(top["activations"], top["sequence"], strict=True) if c == "A"] == [1.0] * top[
        "sequence"].count("A")  # fmt: skip
    assert sum(example["histogram"]["counts"]) == sum(p.sequence.count("A") for p in proteins)


def test_a_concept_tied_to_a_position_is_flagged_positional():
    # Every protein starts with M: the position-only predictor gets aa_M exactly, so the planted feature's
    # perfect F1 is not above it.
    proteins = [Protein(p.id, "M" + p.sequence.replace("M", "A")) for p in _random_proteins(30, seed=2)]
    result = match_concepts(_PlantedSae(), _OneHotStore(proteins), 1, {p.id: p for p in proteins},
                            names=["aa_M", "aa_A"], seed=0, numbered=False)  # fmt: skip
    concepts = result.concepts.set_index("concept")
    assert concepts.loc["aa_M", "position_f1"] == 1.0 and bool(concepts.loc["aa_M", "positional"])
    assert not bool(concepts.loc["aa_A", "positional"])
    assert result.summary["matched_beyond_position"]["features"] == 1  # aa_A only
    assert result.summary["beyond_controls"] == ["aa_A"]
    # A control that reaches the features' F1 takes the concept away from the verdict.
    strong = match_concepts(_PlantedSae(), _OneHotStore(proteins), 1, {p.id: p for p in proteins},
                            names=["aa_M", "aa_A"], seed=0, numbered=False,
                            controls={"random_model": result.feature_table})  # fmt: skip
    assert strong.summary["beyond_controls"] == []
    assert verdict(strong.summary) == (
        "No concept is matched above every control (shuffled concepts, random-weight "
        "model, position alone): what these features match, the controls reach too."
    )


def summary_of(root) -> dict:
    return json.loads((root / "sae" / "concepts" / "summary.json").read_text())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny BERT (with its head), a FASTA of training sequences and one of evaluation sequences, through
    extract, train and concepts."""
    root = tmp_path_factory.mktemp("features")
    model = tiny_bert(root / "model", layers=2, lm_head=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 120), ("eval", 40)):
        lines = [f">{name}{i}\n{''.join(rng.choice(list(AMINO), size=int(rng.integers(25, 50))))}" for i in range(n)]
        (root / f"{name}.fasta").write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    results = [
        runner.invoke(app, ["features", "extract", "--model", str(model), "--data", str(root / "train.fasta"),
                            "--layers", "1", "--out", str(root / "store")]),
        runner.invoke(app, ["features", "train", str(root / "store"), "--layer", "1", "--out", str(root / "sae"),
                            "--width", "64", "--k", "4", "--batch-size", "256", "--epochs", "4"]),
        runner.invoke(app, ["features", "concepts", str(root / "sae"), "--data", str(root / "eval.fasta"),
                            "--fidelity-proteins", "8"]),
    ]  # fmt: skip
    return root, model, results


def test_extract_train_concepts_write_what_the_report_reads(pipeline):
    root, _, results = pipeline
    for result in results:
        assert result.exit_code == 0, result.output
    assert "120 proteins" in results[0].output and "variance explained" in results[1].output
    assert "concepts matched by features" in results[2].output and "loss recovered" in results[2].output
    verdict_line = "Matched above every control" if summary_of(root)["beyond_controls"] else "No concept is matched"
    assert verdict_line in results[2].output and "\\n" not in results[2].output
    sae = FeatureDir(root / "sae")
    record = sae.sae_record()
    assert record["layer"] == 1 and record["config"]["width"] == 64 and record["model"]["random_init"] is False
    assert record["training"]["tokens_seen"] > 0
    summary = sae.concepts_summary()
    assert set(summary["concept_names"]) <= {f"aa_{a}" for a in AMINO}
    assert summary["n_proteins"]["validation"] + summary["n_proteins"]["test"] == 40
    assert 0 <= summary["matched_beyond_position"]["features"] <= summary["matched_concepts"]["features"]
    fidelity = summary["fidelity"]
    assert fidelity["residues_scored"] > 0 and fidelity["loss_intact"] > 0
    assert len(sae.features_table()) == 64 and set(sae.concepts_table()["concept"]) == set(summary["concept_names"])
    assert json.loads((root / "sae" / "concepts" / "examples.json").read_text())["source"].endswith("eval.fasta")
    assert not list((root / "sae" / "concepts").glob(".states-*"))  # the temporary stores are gone


def test_commands_refuse_to_replace_and_name_bad_inputs(pipeline):
    root, _, _ = pipeline
    runner = CliRunner()
    again = runner.invoke(app, ["features", "concepts", str(root / "sae"), "--data", str(root / "eval.fasta")])
    assert again.exit_code == 2 and "add --overwrite" in again.output
    retrain = runner.invoke(app, ["features", "train", str(root / "store"), "--layer", "1", "--out", str(root / "sae")])
    assert retrain.exit_code == 2 and "add --overwrite" in retrain.output
    wrong = runner.invoke(app, ["features", "train", str(root / "store"), "--layer", "2", "--out", str(root / "x")])
    assert wrong.exit_code == 2 and "layer 2 was not extracted" in wrong.output and "Traceback" not in wrong.output
    nothing = runner.invoke(app, ["features", "train", str(root / "nowhere"), "--layer", "1", "--out", str(root / "y")])
    assert nothing.exit_code == 2 and "activations.json: missing" in nothing.output
    not_sae = runner.invoke(app, ["features", "concepts", str(root / "store"), "--data", str(root / "eval.fasta")])
    assert not_sae.exit_code == 2 and "not an SAE (no sae.json" in not_sae.output
    assert not (root / "store" / "concepts").exists()
    bad_layers = runner.invoke(app, ["features", "extract", "--model", "m", "--data", str(root / "eval.fasta"),
                                     "--layers", "one", "--out", str(root / "z")])  # fmt: skip
    assert bad_layers.exit_code == 2 and "--layers" in bad_layers.output


def test_show_gives_each_residue_its_top_features(pipeline):
    root, _, _ = pipeline
    result = CliRunner().invoke(app, ["features", "show", str(root / "sae"), "--sequence", "MKTAYIAK", "--top", "2"])
    assert result.exit_code == 0, result.output
    # stdout and stderr (where transformers' progress bars go) are mixed here: keep the table's rows.
    lines = [found.group(0) for found in re.finditer(r"(?m)\b\d+ [A-Z]  .*$", result.output)]
    assert len(lines) == 8 and lines[0].split()[:2] == ["1", "M"] and lines[-1].split()[:2] == ["8", "K"]
    assert all(line.count(" f") <= 2 for line in lines)
    neither = CliRunner().invoke(app, ["features", "show", str(root / "sae")])
    assert neither.exit_code == 2 and "exactly one of --sequence and --structure" in neither.output


def test_torchrun_extraction_equals_one_process(tmp_path):
    from test_scale_processes import environment, free_port, plmlens, torchrun

    model = tiny_bert(tmp_path / "model", layers=2)
    rng = np.random.default_rng(4)
    fasta = tmp_path / "seqs.fasta"
    fasta.write_text("".join(f">s{i}\n{''.join(rng.choice(list(AMINO), size=int(rng.integers(20, 60))))}\n"
                             for i in range(60)))  # fmt: skip
    args = ["features", "extract", "--model", str(model), "--data", str(fasta), "--layers", "2", "--max-tokens", "300"]
    one = plmlens(*args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    launcher = ("--nproc-per-node=2", f"--master-port={free_port()}")
    two = subprocess.run(torchrun(*args, "--out", str(tmp_path / "two"), launcher=launcher), capture_output=True,
                         text=True, env=environment(), timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    single, ranks = ActivationStore(tmp_path / "one"), ActivationStore(tmp_path / "two")
    assert set(ranks.index["rank"]) == {0, 1} and ranks.record["settings"]["world_size"] == 2
    columns = ["id", "record", "position", "length"]
    assert ranks.index[columns].reset_index(drop=True).equals(single.index[columns].reset_index(drop=True))
    expected = dict(single.proteins(2))
    for protein_id, states in ranks.proteins(2):
        np.testing.assert_array_equal(states, expected[protein_id])
