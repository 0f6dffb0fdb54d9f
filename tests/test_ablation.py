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
    assert result.info["answer"].startswith("Ablating the top 1 contact heads")
    assert result.info["objective"] == "next-token loss" and result.info["mask_fraction"] is None
    assert result.info["mask_draws"] == 1  # every residue is scored: nothing to draw
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
    assert kinds.to_dict() == {"head": 12, "random": 4, "layer_matched": 4, "layer": 3, "baseline": 1,
                               "top_contact": 1}  # fmt: skip
    randoms = [a.heads for a in ablations if a.kind == "random"]
    assert all(len(set(heads)) == 2 for heads in randoms)
    # Layer-matched: one head from layer 1 and one from layer 3 in every group, as in the top group.
    matched = [a.heads for a in ablations if a.kind == "layer_matched"]
    assert all(sorted(layer for layer, _ in heads) == [0, 2] for heads in matched) and len(set(matched)) > 1
    assert len([a for a in standard_ablations(3, 4, top_heads=[(0, 0)], random_groups=4, layer_matched_groups=7)
                if a.kind == "layer_matched"]) == 7  # fmt: skip
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
        "--bootstrap", "50", "--mask-draws", "2", "--groups-per-pass", "2", "--format", "json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["kind"] for r in rows} == {"baseline", "head", "layer", "top_contact", "random", "layer_matched"}
    table = pd.read_csv(tmp_path / "run" / "ablation.csv")
    assert len(table) == 1 + 12 + 3 + 1 + 3 + 3
    assert table["contact_long_p_at_L5"].notna().all()
    summary = json.loads((tmp_path / "run" / "ablation.json").read_text())
    assert summary["n_regression_proteins"] == 4 and summary["n_evaluation_proteins"] == 6
    assert summary["answer"].startswith("Ablating the top 3 contact heads") and summary["mask_draws"] == 2
    assert summary["groups_per_pass"] == 2 and summary["seconds_per_group"] > 0
    # Three groups can never show a difference: the verdict says so, and why.
    assert "are not shown to differ from" in summary["answer"] and "p cannot fall below 0.5" in summary["answer"]
    assert summary["loss_contact_correlation"]["n_heads"] == 12
    # The intact model's regression beside its floors, fitted on the same 4 training proteins.
    floors = summary["contact_floors"]
    baseline = float(table.loc[table["kind"] == "baseline", "contact_long_p_at_L5"].iloc[0])
    assert floors["long_p_at_L5"]["regression"] == pytest.approx(baseline)
    assert all(0 <= floors["long_p_at_L5"][m] <= 1 for m in ("top_heads", "template", "chance"))
    assert floors["top_heads"]["k"] == len(floors["top_heads"]["heads"]) in (1, 2, 4, 8, 12)
    assert floors["template"]["n_train_proteins"] == 4 and floors["template"]["aligned_by"] == "residue index"
    for figure in ("ablation.png", "ablation.svg"):  # drawn by the report into the same staged output
        assert (tmp_path / "run" / figure).stat().st_size > 0
    report = runner.invoke(app, ["report", str(tmp_path / "run")])
    assert report.exit_code == 0, report.output
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Head ablation" in html and summary["answer"][:40] in html
    assert "beside its floors on the same proteins: regression" in html

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
    # The baseline by hand: the masked-LM loss of the same seeded masks (each draw), all masked at once.
    evaluation = {p.id: p for p in proteins}
    nll, count, correct = 0.0, 0, 0
    assert result.info["mask_draws"] == 3
    for k, protein_id in enumerate(result.info["evaluation_ids"]):
        protein = evaluation[protein_id]
        for draw in range(result.info["mask_draws"]):
            masked = _masked_positions(k, len(protein), 0, draw)
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


def _planted_replicates(values, spread: float = 0.002, replicates: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(values, dtype=float)[..., None] + spread * rng.standard_normal((*np.shape(values), replicates))


def test_a_typical_top_group_is_not_different_though_the_mean_of_random_groups_says_less():
    from plmlens.causal import compare_with_groups

    # 90 groups cost about 0.02; 10 hold a layer-critical head and cost 0.15 (the Sapiens-H case).
    rng = np.random.default_rng(1)
    groups = np.concatenate([0.02 + 0.004 * rng.standard_normal(90), np.full(10, 0.15)])
    top = float(np.median(groups))
    boot, top_boot = _planted_replicates(groups), _planted_replicates(top, seed=2)
    answer = compare_with_groups(top, top_boot, groups, boot, seed=0)
    assert answer["verdict"] == "not different from" and answer["p_value"] > 0.5
    assert answer["median"] == pytest.approx(top) and answer["n_groups"] == 100
    # The rule it replaces: the bootstrap interval of (top − mean of the random groups) lay wholly below zero.
    old = np.percentile(top_boot - boot.mean(axis=0), [2.5, 97.5])
    assert old[1] < 0


@pytest.mark.parametrize(("shift", "verdict"), [(0.5, "more than"), (-0.5, "less than")])
def test_a_top_group_beyond_every_random_group_says_so(shift, verdict):
    from plmlens.causal import compare_with_groups

    groups = np.linspace(0.0, 0.1, 100)
    top = 0.05 + shift
    answer = compare_with_groups(top, _planted_replicates(top, seed=3), groups, _planted_replicates(groups), seed=0)
    assert answer["verdict"] == verdict and answer["p_value"] == pytest.approx(2 / 101)
    assert answer["rank_as_large"] == (0 if shift > 0 else 100)
    assert (answer["difference_low"] > 0) == (shift > 0) and (answer["difference_high"] < 0) == (shift < 0)
    # A recovery falls when heads matter: the same numbers with the other sign of mattering flip the verdict.
    flipped = compare_with_groups(top, _planted_replicates(top, seed=3), groups, _planted_replicates(groups),
                                  larger_matters=False)  # fmt: skip
    assert flipped["verdict"] == {"more than": "less than", "less than": "more than"}[verdict]


def test_too_few_groups_can_show_no_difference_and_the_answer_says_why():
    from plmlens.causal import answer_text, compare_with_groups

    groups = np.linspace(0.0, 0.1, 10)
    answer = compare_with_groups(1.0, _planted_replicates(1.0), groups, _planted_replicates(groups))
    assert answer["verdict"] == "not different from" and answer["p_value"] == pytest.approx(2 / 11)
    text = answer_text({"question": {"loss": {"random": answer}}, "top_contact_heads": {"k": 5}})
    assert text.startswith("Ablating the top 5 contact heads changes the loss by +1.000 nats; against 10 random groups")
    assert (
        "are not shown to differ from" in text and "p cannot fall below 0.18" in text and "two-sided p = 0.182" in text
    )
    assert answer_text({"question": None}).startswith("No top contact heads")


def _planted_ablation(tmp_path, monkeypatch, top_cost: float):
    """`ablate` on a model whose heads each cost a planted, additive loss: four layer-critical heads of layer 1
    0.15, the others 0.02, the five top heads `top_cost` each; every protein scales the costs by its own
    factor. About 72% of random groups of five miss every critical head, so their median is five ordinary heads."""
    import plmlens.causal.ablation as module

    adapter = load_model(tiny_bert(tmp_path / "model", layers=8, heads=8, lm_head=True), device="cpu",
                         dtype="float32", lm_head=True)  # fmt: skip
    top = [(2, 0), (3, 4), (4, 1), (5, 6), (6, 3)]
    cost = np.full((8, 8), 0.02)
    cost[0, :4] = 0.15
    for layer, head in top:
        cost[layer, head] = top_cost
    active: list[list[tuple[int, int]]] = [[]]  # the heads each copy of a batch loses

    class Planted:
        def __init__(self, adapter, heads, mode="zero", means=None):
            self.groups = [list(heads)]

        def __enter__(self):
            active[:] = self.groups

        def __exit__(self, *exc):
            active[:] = [[]]

    class PlantedGroups(Planted):
        def __init__(self, adapter, groups, mode="zero", means=None):
            self.groups = [list(heads) for heads in groups]

    def evaluate_copies(adapter, data, regression, copies, *, batch_size, max_length):
        assert copies == len(active)
        factor = np.linspace(0.5, 1.5, len(data.proteins))
        sums = np.full((copies, len(data.proteins), data.n_draws, 6), np.nan)
        for copy, heads in enumerate(active):
            lost = sum(cost[layer, head] for layer, head in heads)
            sums[copy, :, :, 1] = 10.0
            sums[copy, :, :, 0] = 10.0 * (2.0 + lost * factor[:, None] + 0.01 * np.arange(data.n_draws))
            sums[copy, :, :, 2] = 5.0
        return sums

    monkeypatch.setattr(module, "HeadAblation", Planted)
    monkeypatch.setattr(module, "GroupAblation", PlantedGroups)
    monkeypatch.setattr(module, "_evaluate_copies", evaluate_copies)
    proteins = [Protein(f"p{k}", s) for k, s in enumerate(_sequences(24, seed=5))]
    return ablate(adapter, proteins, top_heads=top, regression_proteins=4, bootstrap=200)


def test_planted_model_typical_top_heads_are_not_different(tmp_path, monkeypatch):
    result = _planted_ablation(tmp_path, monkeypatch, top_cost=0.02)
    table = result.table
    top = float(table.loc[table["kind"] == "top_contact", "delta_loss"].iloc[0])
    random = table.loc[table["kind"] == "random", "delta_loss"].to_numpy()
    assert len(random) == 100 and top == pytest.approx(np.median(random))
    assert top < random.mean() - 0.03  # the mean the old verdict compared with ("matter less")
    answers = result.info["question"]["loss"]
    assert answers["random"]["verdict"] == answers["layer_matched"]["verdict"] == "not different from"
    assert "are not shown to differ from those" in result.info["answer"] and "matter less" not in result.info["answer"]


def test_planted_model_top_heads_that_matter_more_say_more(tmp_path, monkeypatch):
    result = _planted_ablation(tmp_path, monkeypatch, top_cost=0.3)
    answers = result.info["question"]["loss"]
    assert answers["random"]["verdict"] == "more than" and answers["random"]["p_value"] < 0.05
    assert answers["layer_matched"]["verdict"] == "more than"
    assert result.info["answer"].count("matter more than those") == 2


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_group_ablation_gives_each_copy_of_a_batch_its_own_group(mlm, mode):
    from plmlens.causal import GroupAblation

    sequences = _sequences(3, seed=4)
    groups = [[(0, 0)], [(1, 2), (2, 3)], []]
    means = mean_head_outputs(mlm, sequences) if mode == "mean" else None
    # Each recording comes after the edit (hooks on a module run in the order they were attached).
    with GroupAblation(mlm, groups, mode=mode, means=means), record_head_outputs(mlm) as together:
        mlm.residue_log_probs(sequences * len(groups))
    for g, heads in enumerate(groups):
        with HeadAblation(mlm, heads, mode=mode, means=means), record_head_outputs(mlm) as alone:
            mlm.residue_log_probs(sequences)
        for layer, (joint, single) in enumerate(zip(together, alone, strict=True)):
            rows = joint[g * len(sequences) : (g + 1) * len(sequences)]
            assert rows.shape == single.shape
            torch.testing.assert_close(rows, single, rtol=1e-5, atol=1e-6, msg=f"group {g}, layer {layer}")
    with pytest.raises(ValueError, match="at least one group"):
        GroupAblation(mlm, [])


def test_control_groups_in_one_pass_agree_with_one_by_one(mlm):
    proteins = [Protein(f"p{k}", s) for k, s in enumerate(_sequences(10, seed=6))]
    settings = dict(top_heads=[(0, 1), (2, 0)], random_groups=6, regression_proteins=2, bootstrap=50, mask_draws=2)
    one = ablate(mlm, proteins, groups_per_pass=1, **settings)
    four = ablate(mlm, proteins, groups_per_pass=4, **settings)
    columns = ["ablation", "kind", "delta_loss", "delta_recovery"]
    pd.testing.assert_frame_equal(one.table[columns], four.table[columns], rtol=1e-5, atol=1e-7)
    assert four.info["seconds_per_group"] > 0 and four.info["groups_per_pass"] == 4
