"""Issue 22 through the CLI: outputs never replaced unasked, checked before the model runs and locked; resume
refuses swapped data; repeated ids disambiguated (the Jacobian no longer mixes proteins up); truncation told
on the console; ids and file names escaped on the terminal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import line_positions
from plmlens.analysis import CheckpointError, RunInterrupted, analyze
from plmlens.causal import jacobian
from plmlens.cli import app
from plmlens.models import load_model
from plmlens.outputs import claim_output
from plmlens.proteins import Protein, iter_records
from plmlens.proteins.fingerprint import source_fingerprint
from plmlens.proteins.ids import DuplicateIdWarning, unique_ids
from scale_fixtures import synthetic_structures, tiny_bert

PROPERTIES = ["contact", "aa_A"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert"), lm_head=True)


@pytest.fixture
def data(tmp_path) -> str:
    return f"{synthetic_structures(tmp_path / 'structures', 5, min_length=30, max_length=40)}::dssp=false"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- outputs: never replaced unasked, checked first, locked ----------------------------------------------------


def test_analyze_keeps_a_finished_run_and_says_so_before_loading_the_model(tmp_path, data, bert_dir):
    run = tmp_path / "run"
    first = invoke("analyze", "--model", bert_dir, "--data", data, "--out", run)
    assert first.exit_code == 0, first.output
    before = (run / "summary.json").read_text()
    # A model that does not exist: the refusal comes first, before anything is loaded or computed.
    again = invoke("analyze", "--model", tmp_path / "no-such-model", "--data", data, "--out", run)
    assert again.exit_code == 2
    assert "already holds heads.csv, layers.csv, amino_acids.csv, accumulator.npz, summary.json" in error_line(again)
    assert (run / "summary.json").read_text() == before


def test_overwrite_replaces_the_run_and_drops_its_stale_report(tmp_path, data, bert_dir):
    run = tmp_path / "run"
    assert invoke("analyze", "--model", bert_dir, "--data", data, "--out", run).exit_code == 0
    (run / "report.html").write_text("<p>report of the earlier run</p>")
    (run / "figures").mkdir()
    (run / "figures" / "heads_contact.png").write_bytes(b"old")
    replaced = invoke("analyze", "--model", bert_dir, "--data", data, "--out", run, "--seed", "5", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((run / "summary.json").read_text())["seed"] == 5
    assert not (run / "report.html").exists() and not (run / "figures").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".plmlens.lock"]


@pytest.mark.parametrize("command", ["save", "describe", "show"])
def test_single_file_outputs_are_never_replaced_unasked(tmp_path, data, command):
    target = tmp_path / {"save": "set.proteins.npz", "describe": "d.json", "show": "view.html"}[command]
    target.write_text("earlier")
    args = {
        "save": ["proteins", "save", data, "--out", target],
        "describe": ["proteins", "describe", data, "--json", target],
        "show": ["show", "--model", tmp_path / "none", "--structure", tmp_path / "x.pdb", "--head", "1-1",
                 "--out", target],
    }[command]  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 2 and f"already holds {target.name}" in error_line(result)
    assert target.read_text() == "earlier"
    if command != "show":
        assert invoke(*args, "--overwrite").exit_code == 0
        assert target.read_bytes() != b"earlier"


def test_out_that_is_a_file_or_locked_is_refused_in_one_line(tmp_path, data, bert_dir):
    (tmp_path / "afile").write_text("x")
    result = invoke("analyze", "--model", bert_dir, "--data", data, "--out", tmp_path / "afile")
    assert result.exit_code == 2 and error_line(result).endswith("afile: exists and is not a directory")
    with claim_output(tmp_path / "busy", _outputs()):
        result = invoke("analyze", "--model", bert_dir, "--data", data, "--out", tmp_path / "busy")
    assert result.exit_code == 2 and "another plmlens process is writing here" in error_line(result)
    assert not (tmp_path / "busy" / "checkpoint.npz").exists()


def _outputs():
    from plmlens.analysis import RUN_OUTPUTS

    return RUN_OUTPUTS


def test_a_full_disk_at_the_end_is_one_line_and_keeps_the_checkpoint(tmp_path, data, bert_dir, monkeypatch):
    from plmlens.analysis.result import AnalysisResult

    def half_then_full(self, directory):
        (Path(directory) / "heads.csv").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(AnalysisResult, "save", half_then_full)
    result = invoke("analyze", "--model", bert_dir, "--data", data, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "the results could not be written (no space left on the device)" in error_line(result)
    assert "--resume" in error_line(result)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".plmlens.lock", "checkpoint.npz"]


# -- resume refuses data swapped behind the same path --------------------------------------------------------


def test_resume_refuses_data_replaced_behind_the_same_path(tmp_path, bert_dir):
    folder = synthetic_structures(tmp_path / "structures", 6, min_length=30, max_length=40)
    source = f"{folder}::dssp=false"
    adapter = load_model(bert_dir)
    kwargs = dict(n_bootstrap=5, max_tokens=100, source=source, checkpoint=tmp_path / "ck.npz")
    with pytest.raises(RunInterrupted):
        analyze(adapter, iter_records(source), PROPERTIES, progress=_stop_after_one_batch, **kwargs)
    other = synthetic_structures(tmp_path / "other", 6, seed=1, min_length=30, max_length=40)
    shutil.copy(other / "s002.pdb", folder / "s002.pdb")  # the same name, another protein
    with pytest.raises(CheckpointError) as caught:
        analyze(adapter, iter_records(source), PROPERTIES, resume=True, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and "changed since this checkpoint was written (source_content." in message
    assert "source_content.sha256" in message


def _stop_after_one_batch(state) -> None:
    import signal

    if state.n_batches >= 1:
        os.kill(os.getpid(), signal.SIGTERM)


def test_source_fingerprint_sees_content_not_names(tmp_path):
    path = tmp_path / "a.fasta"
    path.write_text(">a\nACDEFGHIK\n")
    first = source_fingerprint(f"{path}::limit=3")
    assert first["kind"] == "file" and first["size"] == path.stat().st_size
    stat = path.stat()
    path.write_text(">a\nACDEFGHIW\n")  # same size and time: only the content differs
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source_fingerprint(str(path))["sha256_ends"] != first["sha256_ends"]
    big = tmp_path / "big.fasta"
    big.write_bytes(b">b\n" + b"A" * (3 << 20) + b"\n")
    before = source_fingerprint(str(big))
    with open(big, "r+b") as handle:  # a change at the end of a large file
        handle.seek(-2, os.SEEK_END)
        handle.write(b"W")
    assert source_fingerprint(str(big))["sha256_ends"] != before["sha256_ends"]
    assert source_fingerprint(str(tmp_path))["files"] == 2
    assert source_fingerprint(str(tmp_path / "*.fasta"))["kind"] == "glob"
    assert source_fingerprint(str(tmp_path / "none"))["kind"] == "missing"


# -- repeated ids --------------------------------------------------------------------------------------------


def test_repeated_ids_are_renamed_with_one_warning(tmp_path, data):
    folder = Path(data.split("::")[0])
    for copy in ("a", "b"):
        (folder / copy).mkdir()
        shutil.copy(folder / "s000.pdb", folder / copy / "s000.pdb")
    with pytest.warns(DuplicateIdWarning) as caught:
        ids = [p.id for p in iter_records(data) if isinstance(p, Protein)]
    assert len(caught) == 1
    assert len(ids) == len(set(ids)) == 7
    base = next(i for i in ids if "#" not in i and i.startswith("S000"))
    assert {f"{base}#2", f"{base}#3"} <= set(ids)


def test_unique_ids_never_collides_with_a_real_id():
    proteins = [Protein(id=name, sequence="ACD") for name in ("x", "x#2", "x", "x")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateIdWarning)
        ids = [p.id for p in unique_ids(proteins)]
    assert ids == ["x", "x#2", "x#3", "x#4"]
    assert proteins[2].meta["original_id"] == "x"


def test_jacobian_keeps_proteins_that_share_an_id_apart(tmp_path, bert_dir):
    adapter = load_model(bert_dir, lm_head=True)
    rng = np.random.default_rng(0)
    proteins = []
    for n in (30, 36, 33, 40, 31):
        ca = np.cumsum(rng.normal(size=(n, 3)), axis=0) * 2.2 + line_positions(n, 0.5)
        sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), n))
        proteins.append(Protein(id="same", sequence=sequence, ca=ca, cb=ca))
    with pytest.warns(DuplicateIdWarning):
        result = jacobian(adapter, proteins, regression_proteins=2, batch_size=100, max_length=60,
                          cache=tmp_path / "cache")  # fmt: skip
    length = {p.id: len(p) for p in proteins}  # renamed in place: same, same#2, ...
    assert sorted(length) == ["same", "same#2", "same#3", "same#4", "same#5"]
    assert len(result.maps) == 3  # three evaluation proteins, three maps (not one map reused for all)
    for name, coupling in result.maps.items():
        assert coupling.shape == (length[name], length[name])  # each map at its own protein's length
    rows = result.table.groupby("protein")["length"].first().to_dict()
    assert rows == {name: length[name] for name in result.maps}
    again = jacobian(adapter, proteins, regression_proteins=2, batch_size=100, max_length=60, cache=tmp_path / "cache")
    assert again.info["n_resumed"] == len(again.maps)
    for name, coupling in again.maps.items():
        np.testing.assert_array_equal(coupling, result.maps[name])


# -- what the user is told -----------------------------------------------------------------------------------


def test_truncation_is_told_on_the_console_with_the_effective_limit(tmp_path, bert_dir):
    long = tmp_path / "long.fasta"
    long.write_text(">long\n" + "ACDEFGHIKL" * 40 + "\n>short\nACDEFGHIKLMNPQ\n")
    result = invoke("analyze", "--model", bert_dir, "--data", long, "--out", tmp_path / "run", "--properties",
                    "amino_acids")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["max_length"] == 512 and summary["max_residues"] == 254  # 256 positions less [CLS], [SEP]
    assert summary["n_truncated"] == 1 and summary["truncated"] == [{"id": "long", "length": 400}]
    assert "truncated: 1 proteins longer than" in result.stderr and "limit of 254 residues" in result.stderr
    assert "long (400 residues)" in result.stderr


def test_control_characters_in_file_names_reach_the_terminal_escaped(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "evil\x1b[2J\nname.pdb").write_text("not a structure\n")
    (folder / "ok.fasta").write_text(">ok\nACDEFGHIK\n")
    env = {**os.environ, "COLUMNS": "400"}
    done = subprocess.run([sys.executable, "-m", "plmlens", "proteins", "describe", str(folder)],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert "\x1b[2J" not in done.stderr + done.stdout
    assert "evil\\x1b[2J\\nname.pdb" in done.stderr
