"""The report's example proteins (`plmlens.report.examples`): a run's data through its model, and each
reason there are none, in one line for the page."""

from __future__ import annotations

import pytest

from conftest import line_positions
from plmlens.proteins import Protein
from plmlens.proteins.store import save_protein_set
from plmlens.report.examples import NoExamplesError, examples_for_run
from scale_fixtures import tiny_bert


def _summary(model: str, data: str | None) -> dict:
    return {"model": {"name": model}, "data": data, "threshold": 0.3, "max_length": 64}


def _protein_set(path, n: int = 2):
    proteins = [
        Protein(f"p{k}", "ACDEFGHIKLMNPQRSTVWY"[k:] + "ACDEF", ca=line_positions(25 - k, 3.8)) for k in range(n)
    ]
    return save_protein_set(proteins, path, source="synthetic")


def test_the_examples_of_a_run_come_from_its_data_through_its_model(tmp_path):
    model = tiny_bert(tmp_path / "model", layers=2, heads=2)
    data = _protein_set(tmp_path / "set.proteins.npz", 3)
    examples = examples_for_run(_summary(str(model), str(data)), candidates=3, per_head=2, min_arc_weight=0.0)
    assert {example.protein.id for example in examples.examples} <= {"p0", "p1", "p2"} and examples.examples
    assert len(examples.top) == 2 * 2 and all(len(top) <= 2 for top in examples.top)


@pytest.mark.parametrize(
    ("summary", "reason"),
    [
        (_summary("anything", None), r"^the run does not name its data$"),
        ({"model": {"name": None}, "data": "x", "threshold": 0.3}, r"^the run does not name its model$"),
    ],
)
def test_a_run_without_data_or_model_says_so(summary, reason):
    with pytest.raises(NoExamplesError, match=reason):
        examples_for_run(summary)


def test_a_model_that_cannot_be_loaded_is_one_line_with_the_whole_error_kept(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(NoExamplesError, match=r"^the model .*not-a-model could not be loaded \(") as error:
        examples_for_run(_summary(str(empty), "x"))
    assert "\n" not in str(error.value) and error.value.warning


def test_unreadable_or_empty_data_is_one_line(tmp_path):
    model = str(tiny_bert(tmp_path / "model", layers=1, heads=2))
    with pytest.raises(NoExamplesError, match=r"^the run's data .*missing\.pdb could not be read \("):
        examples_for_run(_summary(model, str(tmp_path / "missing.pdb")))
    empty = _protein_set(tmp_path / "empty.proteins.npz", 0)
    with pytest.raises(NoExamplesError, match=r"^the run's data .*empty\.proteins\.npz has no proteins$"):
        examples_for_run(_summary(model, str(empty)))
