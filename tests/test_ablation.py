"""Head ablation: a hook removes exactly the ablated head's output (zero or its mean), leaves the model bit for bit
as it was on exit, and on a model whose signal runs through one head, ablating that head hurts most."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from typer.testing import CliRunner

from models_fixtures import PROTBERT_VOCAB
from plmlens.causal import (
    Ablation,
    AblationUnsupportedError,
    HeadAblation,
    ablate,
    head_projections,
    mean_head_outputs,
    record_head_outputs,
    standard_ablations,
    top_contact_heads,
)
from plmlens.cli import app
from plmlens.models import ModelLoadError, load_model
from plmlens.proteins import Protein
from scale_fixtures import synthetic_structures, tiny_bert, tiny_gpt2

RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def _sequences(n: int, seed: int = 0, low: int = 15, high: int = 30) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(RESIDUES), int(rng.integers(low, high)))) for _ in range(n)]


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
    directory = tiny_bert(tmp_path_factory.mktemp("mlm"), lm_head=True)
    return load_model(directory, device="cpu", dtype="float32", lm_head=True)


def _head_outputs(adapter, sequences) -> list[torch.Tensor]:
    with record_head_outputs(adapter) as seen:
        adapter.residue_log_probs(sequences)
    return seen


def test_zero_ablation_changes_exactly_that_heads_output(mlm):
    sequences = _sequences(3)
    before = _head_outputs(mlm, sequences)
    with HeadAblation(mlm, [(1, 2)]):
        after = _head_outputs(mlm, sequences)
    assert len(before) == len(after) == mlm.n_layers
    assert torch.equal(before[0], after[0])  # earlier layer untouched
    for head in range(mlm.n_heads):
        if head == 2:
            assert torch.count_nonzero(after[1][..., head, :]) == 0
            assert torch.count_nonzero(before[1][..., head, :]) > 0
        else:
            assert torch.equal(before[1][..., head, :], after[1][..., head, :])
    assert not torch.equal(before[2], after[2])  # later layers see the change


def test_mean_ablation_writes_the_mean_over_residues(mlm):
    sequences = _sequences(5, seed=1)
    means = mean_head_outputs(mlm, sequences, batch_size=2)
    # The mean by hand: every residue position of every protein, special tokens and padding left out.
    total, count = np.zeros_like(means), 0
    for sequence in sequences:
        seen = _head_outputs(mlm, [sequence])
        encoding = mlm.encode([sequence])
        start, n = int(encoding.starts[0]), int(encoding.lengths[0])
        for layer, outputs in enumerate(seen):
            total[layer] += outputs[0, start : start + n].double().sum(dim=0).numpy()
        count += n
    np.testing.assert_allclose(means, total / count, rtol=1e-6, atol=1e-9)
    with HeadAblation(mlm, [(2, 0), (0, 3)], mode="mean", means=means):
        after = _head_outputs(mlm, sequences[:2])
    expected = torch.as_tensor(means[2, 0], dtype=torch.float32).expand_as(after[2][..., 0, :])
    assert torch.equal(after[2][..., 0, :], expected)
    expected = torch.as_tensor(means[0, 3], dtype=torch.float32).expand_as(after[0][..., 3, :])
    assert torch.equal(after[0][..., 3, :], expected)


def test_leaving_the_ablation_restores_the_model_bit_for_bit(mlm):
    sequences = _sequences(4, seed=2)
    intact = mlm.residue_log_probs(sequences, masked=[[1, 3]] * 4)
    attention = mlm.attention(sequences[0])
    with HeadAblation(mlm, [(0, 0), (1, 1), (2, 3)]):
        ablated = mlm.residue_log_probs(sequences, masked=[[1, 3]] * 4)
    restored = mlm.residue_log_probs(sequences, masked=[[1, 3]] * 4)
    assert any(not np.array_equal(a, b) for a, b in zip(intact, ablated, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(intact, restored, strict=True))
    assert np.array_equal(attention, mlm.attention(sequences[0]))
    assert all(not module._forward_pre_hooks for module in head_projections(mlm))


def test_ablation_arguments_are_checked(mlm):
    with pytest.raises(IndexError, match="outside 3 layers"):
        HeadAblation(mlm, [(3, 0)])
    with pytest.raises(ValueError, match="mean ablation needs"):
        HeadAblation(mlm, [(0, 0)], mode="mean")
    with pytest.raises(ValueError, match="mode must be one of"):
        HeadAblation(mlm, [(0, 0)], mode="noise")


@pytest.mark.parametrize("kind", ["albert", "t5", "esm", "sapiens", "iglm", "xlnet"])
def test_every_architecture_ablates_one_head_only(kind, tmp_path):
    from test_models import _build

    model, tokenizer, _, _ = _build(kind, tmp_path)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    adapter = load_model(tmp_path, device="cpu", dtype="float32")
    if kind == "xlnet":
        with pytest.raises(AblationUnsupportedError, match="mix heads inside the attention"):
            HeadAblation(adapter, [(0, 0)])
        return
    sequence = _sequences(1, seed=4)[0]
    layer, head = adapter.n_layers - 1, 1  # ALBERT's shared layer: the hook must count which call is which layer
    with record_head_outputs(adapter) as before:
        adapter.attention(sequence)
    with HeadAblation(adapter, [(layer, head)]), record_head_outputs(adapter) as after:
        adapter.attention(sequence)
    assert len(before) == len(after) == adapter.n_layers
    for k in range(adapter.n_layers):
        for h in range(adapter.n_heads):
            if (k, h) == (layer, head):
                assert torch.count_nonzero(after[k][..., h, :]) == 0
            else:
                assert torch.equal(before[k][..., h, :], after[k][..., h, :]), (kind, k, h)


def test_a_checkpoint_without_its_head_is_refused_when_the_head_is_needed(tmp_path):
    bare = tiny_bert(tmp_path / "bare")
    with pytest.raises(ModelLoadError, match="no language-model head"):
        load_model(bare, device="cpu", lm_head=True)
    (tmp_path / "x.fasta").write_text(">x\nACDEFGHIKLMNPQRSTVWY\n")
    for command in ("ablate", "jacobian"):
        result = CliRunner().invoke(app, [command, "--model", str(bare), "--data", str(tmp_path / "x.fasta"),
                                          "--out", str(tmp_path / command)])  # fmt: skip
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and "no language-model head" in errors[0]


def test_causal_model_ablation_uses_next_token_loss(tmp_path):
    adapter = load_model(tiny_gpt2(tmp_path / "gpt2", lm_head=True), device="cpu", dtype="float32", lm_head=True)
    proteins = [Protein(f"p{k}", s) for k, s in enumerate(_sequences(6, seed=3))]
    ablations = [
        Ablation("head 1-1", "head", ((0, 0),)),
        Ablation("top 1 contact", "top_contact", ((1, 2),)),
        Ablation("random 1 #1", "random", ((0, 3),)),
        Ablation("random 1 #2", "random", ((1, 0),)),
    ]
    result = ablate(adapter, proteins, ablations=ablations, regression_proteins=1, bootstrap=20)
    assert result.info["top_contact_heads"] == {"k": 1, "heads": ["2-3"]}
    assert result.info["answer"].startswith("The top 1 contact heads")
    assert result.info["objective"] == "next-token loss" and result.info["mask_fraction"] is None
    baseline = result.table.set_index("ablation").loc["baseline"]
    # By hand: every residue of the evaluation proteins, predicted from the tags and the residues before it.
    nll, count = 0.0, 0
    used = set(result.info["evaluation_ids"])
    assert len(used) == 5
    for protein in (p for p in proteins if p.id in used):
        log_probs = adapter.residue_log_probs([protein])[0]
        columns = ["ACDEFGHIKLMNPQRSTVWY".index(c) for c in protein.sequence]
        nll -= float(log_probs[np.arange(len(protein)), columns].astype(np.float64).sum())
        count += len(protein)
    assert baseline["loss"] == pytest.approx(nll / count, rel=1e-9)
    assert result.table.set_index("ablation").loc["head 1-1", "delta_loss"] != 0


def _one_head_model(directory) -> str:
    """A one-layer BERT trained so that only head 1 can carry what the masked residue needs: each sequence repeats
    one residue, so a masked position is read from the others through attention, and head 2's columns of the
    output projection are held at zero."""
    torch.manual_seed(0)
    tokenizer = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(PROTBERT_VOCAB)}, do_lower_case=False)
    config = transformers.BertConfig(
        vocab_size=30, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, attn_implementation="eager",
    )  # fmt: skip
    model = transformers.BertForMaskedLM(config)
    projection = model.bert.encoder.layer[0].attention.output.dense
    with torch.no_grad():
        projection.weight[:, 16:] = 0
    projection.weight.register_hook(lambda grad: torch.cat([grad[:, :16], torch.zeros_like(grad[:, 16:])], dim=1))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    letters = torch.tensor([PROTBERT_VOCAB.index(c) for c in RESIDUES])
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        ids = letters[torch.randint(0, 20, (32,), generator=generator)][:, None].repeat(1, 12)
        labels = torch.full_like(ids, -100)
        masked = torch.rand(ids.shape, generator=generator) < 0.2
        masked[:, 0] = True
        labels[masked] = ids[masked]
        inputs = ids.masked_fill(masked, PROTBERT_VOCAB.index("[MASK]"))
        inputs = torch.cat([torch.full((32, 1), 2), inputs, torch.full((32, 1), 3)], dim=1)
        labels = torch.cat([torch.full((32, 1), -100), labels, torch.full((32, 1), -100)], dim=1)
        loss = model(input_ids=inputs, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.5, f"the one-head model did not learn its task (loss {loss.item():.2f})"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def test_ablating_the_head_that_carries_the_signal_hurts_most(tmp_path):
    adapter = load_model(_one_head_model(tmp_path / "one-head"), device="cpu", dtype="float32", lm_head=True)
    proteins = [Protein(f"p{k}", RESIDUES[k % 20] * 12) for k in range(24)]
    for mode in ("zero", "mean"):
        result = ablate(adapter, proteins, mode=mode, regression_proteins=2, bootstrap=100, random_groups=0)
        rows = result.table.set_index("ablation")
        assert rows.loc["baseline", "recovery"] > 0.9
        assert rows.loc["head 1-1", "delta_loss"] > 1.0
        assert rows.loc["head 1-1", "delta_loss_low"] > 0.5  # the interval excludes no effect
        assert rows.loc["head 1-1", "delta_recovery"] < -0.5
        # Head 2's output never reaches the model: ablating it changes nothing at all.
        assert rows.loc["head 1-2", "delta_loss"] == 0.0
        assert rows["delta_loss"].idxmax() == "head 1-1"


def test_standard_ablations_and_top_contact_heads():
    ablations = standard_ablations(3, 4, top_heads=[(2, 1), (0, 0)], random_groups=4, seed=1)
    kinds = pd.Series([a.kind for a in ablations]).value_counts()
    assert kinds.to_dict() == {"head": 12, "random": 4, "layer": 3, "baseline": 1, "top_contact": 1}
    randoms = [a.heads for a in ablations if a.kind == "random"]
    assert all(len(set(heads)) == 2 for heads in randoms)
    assert randoms == [a.heads for a in standard_ablations(3, 4, top_heads=[(2, 1), (0, 0)], random_groups=4, seed=1)
                       if a.kind == "random"]  # fmt: skip
    heads = pd.DataFrame({
        "property": ["contact"] * 4 + ["helix"], "layer": [1, 1, 2, 2, 2], "head": [1, 2, 1, 2, 2],
        "proportion": [0.5, 0.9, 0.7, 0.2, 1.0], "n_arcs": [200, 5, 300, 400, 500],
        "few_arcs": [False, True, False, False, False],
    })  # fmt: skip
    assert top_contact_heads(heads, k=2) == [(1, 0), (0, 0)]  # 1-2 has too few arcs


def test_ablate_and_report_through_the_cli(tmp_path):
    model = tiny_bert(tmp_path / "model", lm_head=True)
    data = f"{synthetic_structures(tmp_path / 'structures', 10, min_length=30, max_length=50)}::dssp=false"
    runner = CliRunner()
    analysis = runner.invoke(app, ["analyze", "--model", str(model), "--data", data, "--out", str(tmp_path / "run"),
                                   "--threshold", "0.05"])  # fmt: skip
    assert analysis.exit_code == 0, analysis.output
    heads = pd.read_csv(tmp_path / "run" / "heads.csv")
    heads.loc[heads["property"] == "contact", "few_arcs"] = False  # every head eligible on this tiny run
    heads.to_csv(tmp_path / "run" / "heads.csv", index=False)
    result = runner.invoke(app, [
        "ablate", "--model", str(model), "--data", data, "--out", str(tmp_path / "run"), "--analysis",
        str(tmp_path / "run"), "--top-k", "3", "--random-groups", "3", "--regression-proteins", "4",
        "--bootstrap", "50", "--format", "json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["kind"] for r in rows} == {"baseline", "head", "layer", "top_contact", "random"}
    table = pd.read_csv(tmp_path / "run" / "ablation.csv")
    assert len(table) == 1 + 12 + 3 + 1 + 3
    assert table["contact_long_p_at_L5"].notna().all()
    summary = json.loads((tmp_path / "run" / "ablation.json").read_text())
    assert summary["n_regression_proteins"] == 4 and summary["n_evaluation_proteins"] == 6
    assert summary["answer"].startswith("The top 3 contact heads")
    assert summary["loss_contact_correlation"]["n_heads"] == 12
    for figure in ("ablation.png", "ablation.svg"):  # drawn by the report into the same staged output
        assert (tmp_path / "run" / figure).stat().st_size > 0
    report = runner.invoke(app, ["report", str(tmp_path / "run")])
    assert report.exit_code == 0, report.output
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Head ablation" in html and summary["answer"][:40] in html

    wrong = runner.invoke(app, ["ablate", "--model", str(model), "--data", data, "--out", str(tmp_path / "x"),
                                "--mode", "noise"])  # fmt: skip
    assert wrong.exit_code == 2 and "--mode must be one of" in wrong.output


@pytest.mark.integration
def test_antiberty_single_head_and_group_ablation():
    # Integration: the real model (fails, never skips, when the antiberty wheel is missing).
    from models_fixtures import antibody_chains
    from plmlens.causal.ablation import _masked_positions

    adapter = load_model("antiberty", device="cpu", dtype="float32", lm_head=True)
    proteins = [Protein(c.id, c.sequence) for c in antibody_chains(limit=8)]
    result = ablate(
        adapter, proteins, regression_proteins=2, bootstrap=50,
        ablations=[Ablation("head 8-8", "head", ((7, 7),)),
                   Ablation("layer 1", "layer", tuple((0, h) for h in range(8)))],
    )  # fmt: skip
    rows = result.table.set_index("ablation")
    # The baseline by hand: the masked-LM loss of the same seeded masks, all masked at once.
    evaluation = {p.id: p for p in proteins}
    nll, count, correct = 0.0, 0, 0
    for k, protein_id in enumerate(result.info["evaluation_ids"]):
        protein = evaluation[protein_id]
        masked = _masked_positions(k, len(protein), 0)
        log_probs = adapter.residue_log_probs([protein], masked=[masked])[0][masked]
        truth = np.array(["ACDEFGHIKLMNPQRSTVWY".index(protein.sequence[i]) for i in masked])
        nll -= float(log_probs[np.arange(len(masked)), truth].astype(np.float64).sum())
        count += len(masked)
        correct += int((log_probs.argmax(axis=1) == truth).sum())
    assert rows.loc["baseline", "loss"] == pytest.approx(nll / count, rel=1e-6)
    assert rows.loc["baseline", "recovery"] == pytest.approx(correct / count)
    assert rows.loc["baseline", "recovery"] > 0.6  # AntiBERTy recovers most masked residues
    assert rows.loc["head 8-8", "delta_loss"] != 0 and rows.loc["layer 1", "delta_loss"] != 0
    assert np.isfinite(rows[["delta_loss_low", "delta_loss_high"]].to_numpy()).all()


@pytest.mark.parametrize(("n_layers", "n_heads"), [(4, 8), (30, 16)])
def test_causal_figures_keep_every_text_inside_the_canvas(n_layers, n_heads):
    import matplotlib.pyplot as plt

    from plmlens.report import figures
    from test_report import synthetic_heads, texts_outside_canvas

    ablations = standard_ablations(n_layers, n_heads, top_heads=[(0, 0), (1, 1)], random_groups=10)
    rng = np.random.default_rng(0)
    table = pd.DataFrame([{"ablation": a.name, "kind": a.kind,
                           "layer": a.heads[0][0] + 1 if a.kind in ("head", "layer") else None,
                           "head": a.heads[0][1] + 1 if a.kind == "head" else None,
                           "delta_loss": rng.normal(), "delta_loss_low": -1.0, "delta_loss_high": 1.0}
                          for a in ablations])  # fmt: skip
    info = {"model": {"layers": n_layers, "heads": n_heads, "causal": False}, "mode": "zero"}
    summary = pd.DataFrame([{"range": r, "k": k, "chance": 0.05, "jacobian": 0.5, "regression": 0.4, "best_head": 0.3}
                            for r in ("short", "medium", "long", "all") for k in ("L", "L/2", "L/5")])  # fmt: skip
    built = {
        "ablation": figures.ablation_figure(table, info, synthetic_heads(n_layers, n_heads)),
        "jacobian": figures.jacobian_figure(summary),
    }
    try:
        for name, fig in built.items():
            assert texts_outside_canvas(fig) == [], name
    finally:
        for fig in built.values():
            plt.close(fig)


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [(0.01, 0.2, "matter more than"), (-0.2, -0.01, "matter less than"), (-0.1, 0.1, "do not clearly differ from")],
)
def test_the_answer_follows_the_interval_of_the_difference(low, high, verdict):
    from plmlens.causal.ablation import answer_text

    answer = {"top_contact": 0.1, "random_mean": 0.05, "random_as_large": 2, "random_groups": 10,
              "difference": 0.05, "difference_low": low, "difference_high": high}  # fmt: skip
    text = answer_text({"question": {"loss": answer}, "top_contact_heads": {"k": 5}})
    assert text.startswith(f"The top 5 contact heads {verdict} random groups of 5 heads")
    assert "2 of 10 random groups as large" in text
    assert answer_text({"question": None}).startswith("No top contact heads")
