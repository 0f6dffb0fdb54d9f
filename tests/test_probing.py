"""Probing: metrics by hand, planted signals reach near-perfect scores, random features sit at chance."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from typer.testing import CliRunner

from dist_probe_script import proteins as labelled_proteins
from plmlens.cli import app
from plmlens.models import LayerOutput, load_model
from plmlens.models.hf import FAMILIES
from plmlens.probing import apc, precision_at_k, probe, split_proteins
from plmlens.probing.metrics import contact_precisions, f1_counts, f1_from_counts
from plmlens.proteins import Protein, contact_map
from plmlens.report.figures import probe_curves
from scale_fixtures import tiny_bert
from test_models import KINDS
from test_random_init import save_tiny


def test_precision_at_k_by_hand():
    scores = np.array([0.9, 0.1, 0.8, 0.7, 0.2])
    labels = np.array([1, 0, 0, 1, 1])
    assert precision_at_k(scores, labels, 1) == 1.0
    assert precision_at_k(scores, labels, 3) == pytest.approx(2 / 3)  # 0.9 ✓, 0.8 ✗, 0.7 ✓
    assert precision_at_k(scores, labels, 10) == pytest.approx(3 / 5)


def test_apc_by_hand():
    a = np.array([[0.0, 2.0], [2.0, 4.0]])
    # rows [2, 6], columns [2, 6], total 8: correction r_i c_j / 8.
    expected = a - np.array([[2 * 2, 2 * 6], [6 * 2, 6 * 6]]) / 8
    np.testing.assert_allclose(apc(a), expected)
    np.testing.assert_allclose(apc(np.stack([a, 2 * a]))[1], 2 * expected)


def test_f1_and_contact_precision_ranges():
    counts = f1_counts(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    assert counts.tolist() == [1, 1, 1] and f1_from_counts(counts) == pytest.approx(0.5)
    n = 40
    truth = np.zeros((n, n), bool)
    truth[0, 30] = truth[30, 0] = True  # long range
    truth[5, 13] = truth[13, 5] = True  # short range (8)
    contacts = np.ma.MaskedArray(truth, mask=np.zeros_like(truth))
    scores = truth.astype(float)
    result = contact_precisions(scores, contacts, divisors=(1, 5))
    assert result[("long", 5)][0] == pytest.approx(1 / 8)  # one true contact among the top L/5 = 8
    assert result[("short", 1)][0] == pytest.approx(1 / 40)
    assert result[("medium", 5)][0] == 0.0


def planted(n_proteins: int = 60, length: int = 50, seed: int = 0) -> list[Protein]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_proteins):
        steps = rng.normal(size=(length, 3))
        ca = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
        dssp = "".join(rng.choice(list("HEST-"), length))
        out.append(Protein(id=f"p{k}", sequence="A" * length, ca=ca, cb=ca, dssp=dssp,
                           binding_site=rng.random(length) < 0.1))  # fmt: skip
    return out


class PlantedAdapter:
    """Layer 1: random features and attention. Layer 2: hidden states that encode the secondary-structure
    class and binding sites linearly, and attention placed on contacts."""

    name, architecture, n_layers, n_heads, n_params, max_length = "planted", "test", 2, 2, 0, 1024
    random_init, init_seed = False, None

    def __init__(self, proteins: list[Protein]) -> None:
        self.truth = {p.id: p for p in proteins}

    def iter_layers(self, batch, ids=None, *, max_length=512, hidden_states=True):
        width = max(len(p) for p in batch)
        lengths = torch.tensor([len(p) for p in batch])
        generator = torch.Generator().manual_seed(len(batch) * 1000 + width)
        for layer in range(2):
            hidden = torch.randn(len(batch), width, 16, generator=generator)
            attention = torch.rand(len(batch), 2, width, width, generator=generator) / width
            if layer == 1:
                for b, protein in enumerate(batch):
                    n = len(protein)
                    classes = protein.ss_classes
                    for c, name in enumerate(("helix", "strand", "turn_bend")):
                        hidden[b, :n, c] += 4.0 * torch.from_numpy((classes == name).astype(np.float32))
                    hidden[b, :n, 3] += 4.0 * torch.from_numpy(protein.binding_site.astype(np.float32))
                    contacts = torch.from_numpy(contact_map(protein).filled(False).astype(np.float32))
                    attention[b, 0, :n, :n] += contacts
            yield LayerOutput(layer=layer, attention=attention, hidden=hidden, lengths=lengths)


def test_planted_signals_and_chance_levels():
    proteins = planted()
    result = probe(PlantedAdapter(proteins), proteins, train_fraction=0.5, seed=0, regression_proteins=10)
    frame = result.probes.set_index(["task", "representation", "layer", "metric"])
    value = frame["value"]
    assert value[("secondary_structure", "embedding", 2, "f1_macro")] > 0.95
    assert value[("binding_site", "embedding", 2, "precision_at_L/20")] > 0.95
    assert value[("contact", "attention", 2, "precision_at_L/5")] > 0.95
    # Random features: about the chance level (the share of positives among what is ranked).
    for key in (("binding_site", "embedding", 1, "precision_at_L/20"), ("contact", "attention", 1, "precision_at_L/5"),
                ("contact", "embedding", 1, "precision_at_L/5")):  # fmt: skip
        assert abs(value[key] - frame["chance"][key]) < 0.08, key
    assert abs(value[("secondary_structure", "embedding", 1, "f1_strand")] - frame["chance"][
        ("secondary_structure", "embedding", 1, "f1_strand")]) < 0.15  # fmt: skip
    regression = result.contact_regression.set_index(["method", "range", "k"]).loc["regression"]
    assert regression.loc[("all", "L/5"), "precision"] > 0.95
    assert set(regression.index.get_level_values(0)) == {"short", "medium", "long", "all"}
    # The floors beside it, on the same test proteins (the same chance levels).
    by_method = result.contact_regression.set_index(["method", "range", "k"]).sort_index()
    assert set(by_method.index.get_level_values(0)) == {"regression", "top_heads", "template"}
    assert (by_method.loc["template", "chance"] == by_method.loc["regression", "chance"]).all()
    assert by_method.loc[("top_heads", "all", "L/5"), "precision"] > 0.95  # head 1 of layer 2 is on the contacts
    assert result.info["top_heads"]["heads"][0] == "2-1" and result.info["template"]["n_train_proteins"] == 10
    assert result.info["n_train_proteins"] == 30 and result.info["n_test_proteins"] == 30


def test_split_is_by_protein_and_seeded():
    proteins = planted(10, 20)
    train, test = split_proteins(proteins, 0.7, seed=3)
    assert len(train) == 7 and len(test) == 3 and not {p.id for p in train} & {p.id for p in test}
    again, _ = split_proteins(proteins, 0.7, seed=3)
    assert [p.id for p in again] == [p.id for p in train]


def test_cli_probe_rejects_unknown_task(tmp_path):
    result = CliRunner().invoke(
        app, ["probe", "--model", "x", "--data", "y", "--out", str(tmp_path), "--tasks", "nope"]
    )
    assert result.exit_code == 2 and "unknown task" in result.output


def test_probe_result_files(tmp_path):
    proteins = planted(12, 30)
    result = probe(PlantedAdapter(proteins), proteins, tasks=["binding_site", "contact"], train_fraction=0.5)
    paths = result.save(tmp_path)
    header = paths["probes"].read_text().splitlines()[0]
    assert header == "task,representation,layer,metric,value,n_train,n_test,chance"
    assert paths["contact_regression"].read_text().startswith("range,k,precision")
    assert json.loads(paths["summary"].read_text())["n_test_proteins"] == 6


@pytest.mark.parametrize("kind", KINDS)
def test_layer_zero_is_the_embedding_layer_output(kind, tmp_path):
    directory, spaced = save_tiny(kind, tmp_path / kind, shift=False)
    adapter = load_model(directory, device="cpu")
    sequences = ["MKTAYIAKQRQISFVKSHF", "GGSWLKEV"]
    layers = list(adapter.iter_layers(sequences, hidden_states=True))
    embedding = layers[0].embedding
    assert embedding is not None and all(out.embedding is None for out in layers[1:])
    assert embedding.shape == (2, len(sequences[0]), layers[0].hidden.shape[-1])
    # The model's own hidden_states[0], one protein at a time, residues found by its tokenizer.
    config = transformers.AutoConfig.from_pretrained(directory)
    model = getattr(transformers, FAMILIES[config.model_type].model_class).from_pretrained(
        directory, attn_implementation="eager"
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    extra = {"use_mems": False} if config.model_type == "xlnet" else {}
    for b, sequence in enumerate(sequences):
        encoded = tokenizer(" ".join(sequence) if spaced else sequence, return_special_tokens_mask=True,
                            return_tensors="pt")  # fmt: skip
        residues = torch.nonzero(encoded.pop("special_tokens_mask")[0] == 0).flatten()
        with torch.no_grad():
            reference = model.eval()(**encoded, output_hidden_states=True, **extra).hidden_states[0][0, residues]
        n = len(sequence)
        torch.testing.assert_close(embedding[b, :n], reference, atol=1e-5, rtol=1e-5)
        assert not embedding[b, n:].any()
        # Layer 0 is the input of layer 1, not its output.
        assert not torch.allclose(embedding[b, :n], layers[0].hidden[b, :n])
    assert all(out.embedding is None for out in adapter.iter_layers(sequences, hidden_states=False))


def test_probes_have_layer_zero_for_embedding_tasks_only(tmp_path):
    adapter = load_model(tiny_bert(tmp_path / "bert"), device="cpu")
    result = probe(adapter, labelled_proteins(), train_fraction=0.5, batch_size=3, max_train_pairs=600,
                   regression_proteins=4)  # fmt: skip
    result.save(tmp_path / "probe")
    probes = pd.read_csv(tmp_path / "probe" / "probes.csv")
    layers = probes.groupby(["task", "representation"]).layer.agg(lambda x: sorted(set(x)))
    every = list(range(adapter.n_layers + 1))
    assert layers[("secondary_structure", "embedding")] == every
    assert layers[("binding_site", "embedding")] == every
    assert layers[("contact", "embedding")] == every
    assert layers[("contact", "attention")] == every[1:]
    # Layer 0 is probed on the same training examples and test proteins as the other layers.
    contact = probes[(probes.task == "contact") & (probes.representation == "embedding")]
    assert contact.n_train.nunique() == 1 and contact.n_test.nunique() == 1
    assert len(contact.value.unique()) > 1
    # Figure 5: the embedding curve starts at layer 0, the attention curve at layer 1.
    figure = probe_curves(probes)
    for axis in figure.axes:
        lines = {line.get_label(): list(line.get_xdata()) for line in axis.get_lines()}
        assert lines["embedding"] == every
        if "attention" in lines:
            assert lines["attention"] == every[1:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_probe_script(launcher: list[str], model: Path, out: Path) -> None:
    script = Path(__file__).with_name("dist_probe_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, str(script), str(model), str(out)], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_probe_on_two_torchrun_ranks_equals_one_process(tmp_path):
    # Real gloo collectives: the ranks shard both passes, rank 0 fits on the merged features, and
    # per-protein seeding plus merging in protein order make the numbers those of a single process.
    model = tmp_path / "tiny-bert"
    _run_probe_script([sys.executable], model, tmp_path / "one")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={_free_port()}"]
    _run_probe_script(torchrun, model, tmp_path / "two")
    for name in ("probes.csv", "contact_regression.csv"):
        one = pd.read_csv(tmp_path / "one" / name)
        assert len(one) > 0, name
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "two" / name), one, check_exact=True)
        # Rank 1 returns the same result as rank 0.
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "two" / "rank1" / name), one, check_exact=True)
    assert set(pd.read_csv(tmp_path / "one" / "probes.csv").task) == {"secondary_structure", "binding_site", "contact"}
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("one", "two")]
    assert [s["world_size"] for s in summaries] == [1, 2]
    assert summaries[0]["regression_train_proteins"] == summaries[1]["regression_train_proteins"] == 4
    assert summaries[0]["regression_nonzero_features"] == summaries[1]["regression_nonzero_features"]


@pytest.mark.integration
def test_antiberty_probes_on_antibodies(shared_data):
    from plmlens.models import load_model
    from plmlens.proteins import iter_records

    result = probe(load_model("antiberty"), iter_records(f"{shared_data / 'antibodies'}::variable_domain,dssp=true"),
                   limit=40, seed=0, regression_proteins=20)  # fmt: skip
    frame = result.probes.set_index(["task", "representation", "layer", "metric"])
    best_ss = frame.xs("f1_macro", level="metric")["value"].max()
    assert best_ss > 0.5
    sites = frame.xs("precision_at_L/20", level="metric")
    assert (sites["value"] > 2 * sites["chance"]).any()
    regression = result.contact_regression.set_index(["method", "range", "k"]).loc["regression"]
    assert regression.loc[("all", "L/5"), "precision"] > 2 * regression.loc[("all", "L/5"), "chance"]
