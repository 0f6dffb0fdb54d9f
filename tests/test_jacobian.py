"""The categorical Jacobian: a planted pairwise coupling is recovered, batched equals one position at a time,
the correction steps match a by-hand computation, and causal models are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from plmlens.causal import (
    JacobianUnsupportedError,
    categorical_jacobian,
    jacobian,
    jacobian_contacts,
    protein_jacobian_contacts,
    read_jacobian_maps,
)
from plmlens.cli import app
from plmlens.models import load_model
from plmlens.probing.metrics import apc
from plmlens.proteins import Protein
from scale_fixtures import synthetic_structures, tiny_bert, tiny_gpt2

ALPHABET = list(range(5, 25))
VOCAB = 25


class PlantedModel(torch.nn.Module):
    """Logits over 25 tokens at every position: each position's own token shifts its logits (a diagonal
    effect, which the Jacobian discards), and the tokens at positions `i` and `j` shift each other's logits
    through one 20 × 20 coupling matrix; every other pair is coupled 20 times more weakly."""

    def __init__(self, length: int, i: int, j: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.i, self.j = i + 1, j + 1  # token positions after a start token
        self.own = torch.randn(VOCAB, VOCAB, generator=generator)
        self.coupling = torch.randn(VOCAB, VOCAB, generator=generator)
        self.weak = 0.05 * torch.randn(length + 2, length + 2, generator=generator)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        one_hot = torch.nn.functional.one_hot(ids, VOCAB).float()  # (N, T, V)
        logits = one_hot @ self.own
        logits = logits + torch.einsum("kl,nlv,vw->nkw", self.weak, one_hot, self.coupling)
        logits[:, self.j] += one_hot[:, self.i] @ self.coupling
        logits[:, self.i] += one_hot[:, self.j] @ self.coupling.T
        return logits


def _planted(length: int = 12, i: int = 2, j: int = 9, seed: int = 0):
    generator = torch.Generator().manual_seed(seed + 1)
    residues = torch.tensor(ALPHABET)[torch.randint(0, 20, (length,), generator=generator)]
    tokens = torch.cat([torch.tensor([2]), residues, torch.tensor([3])])
    return PlantedModel(length, i, j, seed), tokens, range(1, length + 1)


def test_planted_coupling_is_recovered():
    for seed, (i, j) in enumerate([(2, 9), (0, 11), (5, 6)]):
        model, tokens, positions = _planted(i=i, j=j, seed=seed)
        raw = categorical_jacobian(model, tokens, positions, ALPHABET, batch_size=60)
        assert raw.shape == (12, 20, 12, 20)
        scores = jacobian_contacts(raw)
        np.testing.assert_allclose(scores, scores.T)
        assert np.all(np.diag(scores) == 0)
        upper = np.triu(scores, k=1)
        assert np.unravel_index(np.argmax(upper), upper.shape) == (i, j)


def test_batched_equals_one_position_at_a_time():
    model, tokens, positions = _planted()
    one = categorical_jacobian(model, tokens, positions, ALPHABET, batch_size=1)
    for batch_size in (20, 45, 1000):
        np.testing.assert_allclose(categorical_jacobian(model, tokens, positions, ALPHABET, batch_size=batch_size),
                                   one, rtol=1e-5, atol=1e-5)  # fmt: skip
    # The definition, literally: one substituted sequence per forward pass.
    base = model(tokens[None])[0]
    i, a = 4, 7
    changed = tokens.clone()
    changed[positions[i]] = ALPHABET[a]
    expected = (model(changed[None])[0] - base)[1:13][:, ALPHABET].numpy()
    np.testing.assert_allclose(one[i, a], expected, rtol=1e-5, atol=1e-6)


def test_apc_and_the_correction_steps_by_hand():
    matrix = np.array([[0.0, 2.0, 4.0], [2.0, 0.0, 6.0], [4.0, 6.0, 0.0]])
    # Row sums 6, 8, 10; total 24: APC_ij = M_ij − r_i r_j / 24.
    expected = matrix - np.outer([6, 8, 10], [6, 8, 10]) / 24
    np.testing.assert_allclose(apc(matrix), expected)
    assert apc(matrix)[0, 2] == pytest.approx(4 - 60 / 24)

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(5, 3, 5, 3))
    # Centre over each axis, the norm of each (i, j) block, zero diagonal, APC, zero diagonal, symmetrise.
    centred = raw.copy()
    for axis in range(4):
        centred = centred - centred.mean(axis=axis, keepdims=True)
    norms = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            norms[i, j] = 0.0 if i == j else np.sqrt(sum(centred[i, a, j, b] ** 2 for a in range(3) for b in range(3)))
    rows, total = norms.sum(axis=1), norms.sum()
    corrected = np.array([[norms[i, j] - rows[i] * norms[:, j].sum() / total for j in range(5)] for i in range(5)])
    np.fill_diagonal(corrected, 0)
    np.testing.assert_allclose(jacobian_contacts(raw), (corrected + corrected.T) / 2, atol=1e-12)


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
    directory = tiny_bert(tmp_path_factory.mktemp("mlm"), lm_head=True)
    return load_model(directory, device="cpu", dtype="float32", lm_head=True)


def test_model_jacobian_batched_equals_one_by_one(mlm):
    sequence = "MKTAYIAKQRQISFVKSHFSRQ"
    one = protein_jacobian_contacts(mlm, sequence, batch_size=20)
    many = protein_jacobian_contacts(mlm, sequence, batch_size=400)
    assert one.shape == (len(sequence), len(sequence))
    np.testing.assert_allclose(many, one, rtol=1e-4, atol=1e-6)


def test_causal_models_are_refused_in_one_line(tmp_path):
    model = tiny_gpt2(tmp_path / "gpt2", lm_head=True)
    adapter = load_model(model, device="cpu", lm_head=True)
    with pytest.raises(JacobianUnsupportedError, match="causal"):
        protein_jacobian_contacts(adapter, "ACDEFGHIK")
    (tmp_path / "x.fasta").write_text(">x\nACDEFGHIK\n")
    result = CliRunner().invoke(app, ["jacobian", "--model", str(model), "--data", str(tmp_path / "x.fasta"),
                                      "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 2
    assert "causal (left-to-right) model" in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Zhang et al." in errors[0]  # one line, however long


def test_jacobian_run_scores_every_method_and_writes_its_files(tmp_path, mlm):
    data = synthetic_structures(tmp_path / "structures", 8, min_length=30, max_length=45)
    from plmlens.proteins import iter_records

    records = [p for p in iter_records(f"{data}::dssp=false") if isinstance(p, Protein)]
    result = jacobian(mlm, records, regression_proteins=3, limit=3, batch_size=100, max_length=60)
    assert set(result.table["range"]) == {"short", "medium", "long", "all"}
    assert result.table["protein"].nunique() == 3 and len(result.maps) == 3
    assert result.info["best_head"]["layer"] in (1, 2, 3)
    # The top heads start with the best head; the template is fitted on the 3 training proteins.
    best = result.info["best_head"]
    assert result.info["top_heads"]["heads"][0] == f"{best['layer']}-{best['head']}"
    assert result.info["top_heads"]["k"] in (1, 2, 4, 8, 12) and result.info["template"]["n_train_proteins"] == 3
    assert {f"{m}_p_at_{k}" for m in ("top_heads", "template") for k in ("L", "L2", "L5")} <= set(result.table.columns)
    precision = result.table[[c for c in result.table.columns if "_p_at_" in c]].to_numpy(dtype=float)
    assert np.nanmin(precision) >= 0 and np.nanmax(precision) <= 1
    result.save(tmp_path / "out")
    maps = read_jacobian_maps(tmp_path / "out" / "jacobian_maps.npz")
    assert set(maps) == set(result.maps)
    for key, value in maps.items():
        np.testing.assert_allclose(value, result.maps[key], rtol=1e-3, atol=1e-3)  # stored as float16
    summary = pd.read_csv(tmp_path / "out" / "jacobian_summary.csv")
    assert len(summary) == 4 * 3 and set(summary.columns) >= {
        "jacobian",
        "regression",
        "best_head",
        "top_heads",
        "template",
        "chance",
    }
    assert not list((tmp_path / "out").glob("jacobian.*g"))  # data only: the report draws the figure

    limited = jacobian(mlm, records, regression_proteins=3, max_length=35, batch_size=100)
    assert limited.info["n_too_long"] == sum(len(p) > 35 for p in records) > 0


def test_jacobian_cli_report_and_show(tmp_path):
    model = tiny_bert(tmp_path / "model", lm_head=True)
    data = f"{synthetic_structures(tmp_path / 'structures', 6, min_length=30, max_length=40)}::dssp=false"
    runner = CliRunner()
    analysis = runner.invoke(app, ["analyze", "--model", str(model), "--data", data, "--out", str(tmp_path / "run")])
    assert analysis.exit_code == 0, analysis.output
    result = runner.invoke(app, ["jacobian", "--model", str(model), "--data", data, "--out", str(tmp_path / "run"),
                                 "--regression-proteins", "3", "--limit", "2", "--format", "csv"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("range,k,chance,jacobian,regression,best_head")
    info = json.loads((tmp_path / "run" / "jacobian.json").read_text())
    assert info["n_evaluation_proteins"] == 2 and info["seconds_per_protein"] > 0
    assert not (tmp_path / "run" / ".jacobian_cache").exists()  # removed once the run is written
    for figure in ("jacobian.png", "jacobian.svg"):  # drawn by the report into the same staged output
        assert (tmp_path / "run" / figure).stat().st_size > 0
    table = runner.invoke(app, ["jacobian", "--model", str(model), "--data", data, "--out", str(tmp_path / "again"),
                                "--regression-proteins", "3", "--limit", "2", "--format", "table"])  # fmt: skip
    assert table.exit_code == 0, table.output
    long_row = next(line for line in table.stdout.splitlines() if "long" in line and "L/5" in line)
    assert long_row.rstrip(" │|").split()[-1] == "2"  # the proteins column
    report = runner.invoke(app, ["report", str(tmp_path / "run")])
    assert report.exit_code == 0, report.output
    assert "categorical Jacobian" in (tmp_path / "run" / "report.html").read_text()

    protein = pd.read_csv(tmp_path / "run" / "jacobian.csv")["protein"].iloc[0]
    shown = runner.invoke(app, ["show", "--jacobian", str(tmp_path / "run"), "--data", data, "--protein", protein,
                                "--out", str(tmp_path / "view.html")])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    page = (tmp_path / "view.html").read_text()
    assert "categorical Jacobian" in page
    missing = runner.invoke(app, ["show", "--jacobian", str(tmp_path / "run"), "--data", data, "--protein", "nope",
                                  "--out", str(tmp_path / "none.html")])  # fmt: skip
    assert missing.exit_code == 2 and "no Jacobian map" in missing.output


def test_top_couplings_are_the_strongest_pairs_apart_in_sequence():
    from plmlens.causal import top_couplings

    scores = np.zeros((12, 12))
    for (i, j), value in {(0, 1): 9.0, (2, 10): 5.0, (1, 7): 3.0, (0, 6): 3.0, (4, 11): 1.0}.items():
        scores[i, j] = scores[j, i] = value
    rows, columns = top_couplings(scores, 3)
    # (0, 1) is too close in sequence; the tie at 3.0 keeps the order of the upper triangle.
    assert list(zip(rows.tolist(), columns.tolist(), strict=True)) == [(2, 10), (0, 6), (1, 7)]
    assert len(top_couplings(scores)[0]) == 12  # L by default
    assert len(top_couplings(scores, 100)[0]) == len(np.triu_indices(12, k=6)[0])
    with pytest.raises(ValueError, match="must not be negative, got -3"):
        top_couplings(scores, -3)  # it drew all but 3 pairs, titled "top -3"


def test_show_refuses_a_top_below_one(tmp_path):
    from typer.testing import CliRunner

    from plmlens.cli import app

    result = CliRunner().invoke(app, ["show", "--jacobian", str(tmp_path), "--top", "0"])
    assert result.exit_code == 2 and "--top" in result.output and "Traceback" not in result.output


def test_a_coupling_view_weighs_each_pair_by_the_strongest():
    from plmlens.report import coupling_view

    protein = Protein("p", "ACDEFGHIKLMN", ca=np.arange(12 * 3, dtype=float).reshape(12, 3))
    scores = np.zeros((12, 12))
    scores[2, 10] = scores[10, 2] = 4.0
    scores[0, 6] = scores[6, 0] = 1.0
    view = coupling_view(protein, scores, "tiny", top=3)
    assert view.title == "tiny: categorical Jacobian, top 3 couplings on p"
    weights = view.attention
    assert weights[2, 10] == 1.0 and weights[0, 6] == 0.25
    # The third pair, uncoupled, is still drawn, at the lightest weight.
    assert sorted(weights[weights > 0].tolist()) == [1e-3, 0.25, 1.0] and view.min_weight == 1e-3


@pytest.mark.integration
def test_antiberty_jacobian_of_a_short_fragment_batched_equals_one_by_one():
    # Integration: the real model (fails, never skips, when the antiberty wheel is missing).
    adapter = load_model("antiberty", device="cpu", dtype="float32", lm_head=True)
    fragment = "EVQLVESGGGLVQPGGSLRLSCAAS"
    one = protein_jacobian_contacts(adapter, fragment, batch_size=20)
    many = protein_jacobian_contacts(adapter, fragment, batch_size=500)
    np.testing.assert_allclose(many, one, rtol=1e-3, atol=1e-5)
    assert np.isfinite(one).all() and np.abs(one).max() > 0


def test_an_interrupted_run_resumes_from_its_cache_and_a_bad_protein_is_skipped(tmp_path, mlm, monkeypatch):
    from plmlens.models import SequenceError

    data = synthetic_structures(tmp_path / "structures", 7, min_length=30, max_length=40)
    from plmlens.proteins import iter_records

    records = [p for p in iter_records(f"{data}::dssp=false") if isinstance(p, Protein)]
    whole = jacobian(mlm, records, regression_proteins=3, limit=3)

    def stop_after_two(done, total, seconds):
        if done == 2:
            raise KeyboardInterrupt

    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        jacobian(mlm, records, regression_proteins=3, limit=3, cache=cache, progress=stop_after_two)
    assert len(list(cache.glob("*.npy"))) == 2
    resumed = jacobian(mlm, records, regression_proteins=3, limit=3, cache=cache)
    assert resumed.info["n_resumed"] == 2
    pd.testing.assert_frame_equal(resumed.table, whole.table)
    # Another precision (or model, or weights) does not reuse the maps.
    mlm_half = load_model(mlm.source, device="cpu", dtype="bfloat16", lm_head=True)
    assert jacobian(mlm_half, records, regression_proteins=3, limit=1, cache=cache).info["n_resumed"] == 0

    bad = records[4].id
    encode = mlm.encode

    def refuse(sequences, ids=None, **options):
        items = list(sequences)
        if any(getattr(p, "id", None) == bad for p in items):
            raise SequenceError(f"{bad}: letter 'B' outside the model's alphabet")
        return encode(items, ids, **options)

    monkeypatch.setattr(mlm, "encode", refuse)
    result = jacobian(mlm, records, regression_proteins=3, limit=10)
    assert result.info["skipped"] == [{"id": bad, "reason": f"{bad}: letter 'B' outside the model's alphabet"}]
    assert bad not in set(result.table["protein"]) and result.table["protein"].nunique() == len(records) - 4


def test_contact_regression_summed_by_layer_equals_the_whole(tmp_path, mlm):
    from plmlens.probing.regression import ContactRegression, attention_contact_features

    data = synthetic_structures(tmp_path / "structures", 5, min_length=30, max_length=40)
    from plmlens.proteins import contact_map, iter_records

    records = [p for p in iter_records(f"{data}::dssp=false") if isinstance(p, Protein)]
    attentions = [mlm.attention(p) for p in records]
    regression = ContactRegression().fit(attentions[:4], [contact_map(p) for p in records[:4]])
    whole = regression.predict(attentions[4])
    by_layer = regression.intercept_ + sum(regression.layer_scores(k, a) for k, a in enumerate(attentions[4]))
    np.testing.assert_allclose(by_layer, whole, rtol=1e-12, atol=1e-12)
    features = attention_contact_features(attentions[4])
    assert features.shape == (mlm.n_layers * mlm.n_heads, len(records[4]), len(records[4]))
    with pytest.raises(ValueError, match="heads"):
        regression.layer_scores(0, attentions[4][0, :2])
