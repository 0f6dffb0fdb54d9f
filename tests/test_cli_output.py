"""Issue 12: complete, machine-readable CLI output in pipes (CSV by default off a terminal, --format csv|json),
and progress displays only on a terminal's stderr."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from plmlens.cli import app
from plmlens.cli.analyze import print_top_heads
from plmlens.cli.common import OutputFormat, csv_cell, plain, progress_bar, resolve_format, status
from plmlens.cli.compare import print_compared_models
from plmlens.cli.probe import print_probe_results
from plmlens.models import registry_rows
from scale_fixtures import synthetic_structures

ESCAPE = "\x1b["
ELLIPSIS = "…"
REGISTRY_COLUMNS = ["name", "architecture", "layers", "heads", "parameters", "source", "licence"]


@pytest.fixture(autouse=True)
def no_forced_terminal(monkeypatch):
    """Rich reads these at print time: without them, pipes and CliRunner's streams are not terminals."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_TERMINAL"):
        monkeypatch.delenv(name, raising=False)


def piped_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    # A narrow terminal size must not matter off a terminal.
    return {**env, "COLUMNS": "60", "TERM": "xterm-256color", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def run_piped(*args: str) -> subprocess.CompletedProcess:
    """`python -m plmlens ARGS` with stdout and stderr both pipes."""
    return subprocess.run([sys.executable, "-m", "plmlens", *args], capture_output=True, text=True,
                          env=piped_environment(), timeout=120)  # fmt: skip


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def as_csv_strings(rows: list[dict]) -> list[dict[str, str]]:
    return [{key: csv_cell(value) for key, value in row.items()} for row in rows]


def assert_plain(text: str) -> None:
    assert ESCAPE not in text, "ANSI escape codes in piped output"
    assert ELLIPSIS not in text, "truncated values in piped output"


# plmlens models


def test_models_default_in_a_pipe_is_complete_csv():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert_plain(result.stdout)
    rows = parse_csv(result.stdout)
    assert list(rows[0]) == REGISTRY_COLUMNS
    assert rows == as_csv_strings(registry_rows())
    # The note about other model ids is no data: stderr.
    assert "Hugging Face" not in result.stdout and "Hugging Face" in result.stderr


def test_models_json_equals_the_registry():
    result = CliRunner().invoke(app, ["models", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == registry_rows()


def test_models_forced_table_in_a_pipe_is_not_cut():
    result = CliRunner().invoke(app, ["models", "--format", "table"])
    assert result.exit_code == 0, result.output
    assert_plain(result.stdout)
    for row in registry_rows():
        for key in ("name", "architecture", "source", "licence"):
            assert row[key] in result.stdout
        assert f"{row['layers']} × {row['heads']}" in result.stdout
    assert "Hugging Face model id or local directory also works" in result.stdout


def test_models_through_a_real_pipe():
    done = run_piped("models")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_plain(done.stdout)
    assert ESCAPE not in done.stderr
    rows = parse_csv(done.stdout)
    assert len(rows) == len(registry_rows())
    assert rows == as_csv_strings(registry_rows())


def test_unknown_format_is_refused():
    result = CliRunner().invoke(app, ["models", "--format", "xml"])
    assert result.exit_code == 2


# plmlens proteins describe


@pytest.fixture(scope="module")
def structures(tmp_path_factory) -> str:
    return f"{synthetic_structures(tmp_path_factory.mktemp('structures'), 3)}::dssp=false"


def test_describe_csv_holds_every_background(structures, tmp_path):
    saved = tmp_path / "describe.json"
    result = CliRunner().invoke(app, ["proteins", "describe", structures, "--format", "csv", "--json", str(saved)])
    assert result.exit_code == 0, result.output
    assert_plain(result.stdout)
    rows = parse_csv(result.stdout)
    payload = json.loads(saved.read_text())  # --json PATH still writes the file beside the CSV on stdout
    assert payload["n_proteins"] == 3 and payload["n_skipped"] == 1
    assert [row["annotation"] for row in rows] == list(payload["counts"])
    for row in rows:
        counts = payload["counts"][row["annotation"]]
        assert (int(row["hits"]), int(row["total"])) == (counts["hits"], counts["total"])
        share = payload["backgrounds"][row["annotation"]]
        assert row["share"] == ("" if share is None else repr(share))
    # The summary lines are no CSV: they went to stderr.
    assert "3 proteins" in result.stderr and "3 proteins" not in result.stdout


def test_describe_json_is_the_json_file(structures, tmp_path):
    saved = tmp_path / "describe.json"
    result = CliRunner().invoke(app, ["proteins", "describe", structures, "--format", "json", "--json", str(saved)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(saved.read_text())


def test_describe_through_a_real_pipe_has_no_progress_bar(structures):
    done = run_piped("proteins", "describe", structures)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_plain(done.stdout)
    assert len(parse_csv(done.stdout)) > 20  # contact, binding site, ..., every amino acid
    assert ESCAPE not in done.stderr and "━" not in done.stderr and "describe" not in done.stderr
    assert "skipped" in done.stderr  # the skipped short chain is still reported, as plain text


# The top-heads table of analyze and merge

LONG_NAME = "a_property_with_a_very_long_name_that_a_terminal_table_would_have_to_cut_somewhere"


def summary(support: str = "bidirectional") -> dict:
    top = {"head": "3-2", "proportion": 0.123456789, "background": 0.0456, "enrichment": 2.7, "null_proportion": None,
           "p_bonferroni": 1e-9, "significant": True}  # fmt: skip
    return {
        "support": support,
        "top_heads": {"contact": top, LONG_NAME: {**top, "significant": False}, "aa_A": top},
        "blosum62_correlation": {"model": 0.5, "null": None},
    }


def test_top_heads_csv(capsys):
    print_top_heads(summary("causal"), OutputFormat.csv)
    captured = capsys.readouterr()
    assert_plain(captured.out)
    rows = parse_csv(captured.out)
    assert [row["property"] for row in rows] == ["contact", LONG_NAME]  # amino acids left out, as in the table
    expected = {"property": "contact", "head": "3-2", "proportion": "0.123456789", "background": "0.0456",
                "enrichment": "2.7", "null_proportion": "", "p_bonferroni": "1e-09", "significant": "true"}  # fmt: skip
    assert rows[0] == expected  # raw values in full, a missing one empty
    assert rows[1]["significant"] == "false"
    # BLOSUM62 and the causal caption are no rows: stderr.
    assert "BLOSUM62" in captured.err and "causal model" in captured.err and "BLOSUM62" not in captured.out


def test_top_heads_json_and_auto(capsys):
    print_top_heads(summary(), "json")
    rows = json.loads(capsys.readouterr().out)
    assert [row["property"] for row in rows] == ["contact", LONG_NAME]
    assert rows[0]["proportion"] == 0.123456789 and rows[0]["null_proportion"] is None
    print_top_heads(summary())  # auto, and pytest's stdout is no terminal: CSV
    assert parse_csv(capsys.readouterr().out)[0]["head"] == "3-2"


def test_top_heads_table_off_a_terminal_is_not_cut(capsys):
    print_top_heads(summary(), OutputFormat.table)
    captured = capsys.readouterr()
    assert_plain(captured.out)
    assert LONG_NAME in captured.out and "12.3%" in captured.out
    assert "r = +0.500 (null model: n/a)" in captured.out


# probe and compare


def test_probe_rows_csv(capsys):
    probes = pd.DataFrame(
        [("contact", "attention", 1, "precision@L/5", 0.25, 10, 4, 0.05),
         ("contact", "attention", 2, "precision@L/5", 0.5, 10, 4, 0.05)],
        columns=["task", "representation", "layer", "metric", "value", "n_train", "n_test", "chance"],
    )  # fmt: skip
    regression = pd.DataFrame([("long", "L/5", 0.75, 0.05, 4)], columns=["range", "k", "precision", "chance", "n_test"])
    print_probe_results(SimpleNamespace(probes=probes, contact_regression=regression), OutputFormat.csv)
    rows = parse_csv(capsys.readouterr().out)
    assert len(rows) == 3
    assert rows[0]["layer"] == "1" and rows[1]["value"] == "0.5" and rows[0]["range"] == ""
    expected = {"task": "contact_regression", "representation": "attention", "layer": "", "metric": "precision",
                "value": "0.75", "n_train": "", "n_test": "4", "chance": "0.05", "range": "long",
                "k": "L/5", "method": "regression"}  # fmt: skip
    assert rows[2] == expected


def test_compared_models_in_full(tmp_path, capsys):
    data = "/a/very/long/path/to/the/structures/that/the/terminal/table/cuts/to/its/name::dssp=false"
    frame = pd.DataFrame([
        {"name": "esm [small]", "layers": 8, "heads": 8, "layers × heads": "8 × 8", "parameters": 1_000_000,
         "data": data, "threshold": 0.3, "support": "bidirectional", "random_init": False, "n_arcs_total": 12345},
        {"name": "other", "layers": 2, "heads": 4, "layers × heads": "2 × 4", "parameters": None,
         "data": data, "threshold": 0.3, "support": "causal", "random_init": True, "n_arcs_total": None},
    ])  # fmt: skip
    frame.to_csv(tmp_path / "models.csv", index=False)
    print_compared_models(tmp_path / "models.csv", OutputFormat.csv)
    captured = capsys.readouterr()
    assert_plain(captured.out)
    rows = parse_csv(captured.out)
    assert [row["name"] for row in rows] == ["esm [small]", "other"]
    assert rows[0]["data"] == data and rows[0]["parameters"] == "1000000" and rows[1]["parameters"] == ""
    print_compared_models(tmp_path / "models.csv", OutputFormat.json)
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["n_arcs_total"] == 12345 and rows[1]["n_arcs_total"] is None and rows[1]["random_init"] is True
    print_compared_models(tmp_path / "models.csv", OutputFormat.table)
    table = capsys.readouterr().out
    assert "esm [small]" in table and "name::dssp=false" in table and "12,345" in table


# The helpers


def test_formats_and_cells(monkeypatch):
    assert resolve_format("auto") is OutputFormat.csv  # pytest's stdout is no terminal
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert resolve_format("auto") is OutputFormat.table
    assert resolve_format("json") is OutputFormat.json
    assert [csv_cell(v) for v in (None, float("nan"), True, 0.1, 3, "a,b")] == ["", "", "true", "0.1", "3", "a,b"]
    assert plain({"x": [float("nan"), Path("/p")], "y": pd.NA}) == {"x": [None, "/p"], "y": None}


def test_progress_only_on_a_terminal(monkeypatch):
    with progress_bar() as progress:
        assert progress.disable
    with status("working") as shown:
        assert shown is None  # nothing to draw off a terminal
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert not progress_bar().disable
    assert progress_bar(disable=True).disable  # other ranks under torchrun stay quiet anyway
