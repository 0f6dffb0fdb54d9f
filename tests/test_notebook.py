"""The quickstart notebook runs from top to bottom: model, analysis, top heads as DataFrames, a head in 3D."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


@pytest.mark.integration
def test_quickstart_notebook_executes(shared_data, monkeypatch, tmp_path):
    monkeypatch.setenv("PLMLENS_QUICKSTART_LIMIT", "6")
    monkeypatch.setenv("PLMLENS_SHARED_DATA", str(shared_data))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # stored clean
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   ).execute()  # fmt: skip
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    html = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    tables = [h for h in html if "<table" in h and "proportion" in h]
    assert len(tables) >= 2  # top contact and binding-site heads as DataFrames
    assert any("NGL" in h and "head" in h for h in html)  # the 3D view, inline
    assert any("6 proteins analysed" in "".join(out.get("text", "")) for out in outputs)
