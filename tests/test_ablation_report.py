"""The ablation verdict drawn and reported: the top contact group against the whole distribution of random and
layer-matched groups (figure), and those groups summarised rather than listed (report), for current runs with
hundreds of groups and for older runs with ten random groups and the flat question."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from plmlens.report import figures
from plmlens.report.numbers import fmt_number, fmt_p
from plmlens.report.run_report import causal_context, causal_sections
from test_report import texts_outside_canvas

N_LAYERS, N_HEADS, K = 3, 4, 3
TOP = 0.42


def ablation_table(n_random: int = 100, n_matched: int = 50, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """A synthetic ``ablation.csv`` (baseline, every head, every layer, the top group of `K` heads, the random
    and layer-matched groups) and the planted group Δ losses by kind."""
    rng = np.random.default_rng(seed)
    planted = {"random": rng.normal(0.1, 0.05, n_random), "layer_matched": rng.normal(0.2, 0.05, n_matched)}
    rows = [{"ablation": "baseline", "kind": "baseline", "n_heads": 0, "heads": "", "loss": 2.0, "delta_loss": 0.0}]
    rows += [{"ablation": f"head {layer}-{head}", "kind": "head", "layer": layer, "head": head, "n_heads": 1,
              "heads": f"{layer}-{head}", "delta_loss": rng.normal(0, 0.01)}
             for layer in range(1, N_LAYERS + 1) for head in range(1, N_HEADS + 1)]  # fmt: skip
    rows += [{"ablation": f"layer {layer}", "kind": "layer", "layer": layer, "n_heads": N_HEADS, "delta_loss": 0.05}
             for layer in range(1, N_LAYERS + 1)]  # fmt: skip
    rows.append({"ablation": f"top {K} contact", "kind": "top_contact", "n_heads": K, "heads": "1-1 2-2 3-3",
                 "delta_loss": TOP, "delta_loss_low": TOP - 0.05, "delta_loss_high": TOP + 0.05})  # fmt: skip
    for kind, values in planted.items():
        rows += [{"ablation": f"{kind} {g + 1}", "kind": kind, "n_heads": K, "heads": "1-2 2-3 3-4", "delta_loss": v,
                  "delta_loss_low": v - 0.03, "delta_loss_high": v + 0.03} for g, v in enumerate(values)]  # fmt: skip
    table = pd.DataFrame(rows)
    table["loss"] = table["loss"].fillna(2.0) + table["delta_loss"]
    return table, planted


def ablation_info(question: dict | None) -> dict:
    return {"model": {"name": "synthetic", "layers": N_LAYERS, "heads": N_HEADS, "causal": False}, "mode": "zero",
            "objective": "masked-LM", "n_evaluation_proteins": 8, "n_regression_proteins": 4, "bootstrap": 200,
            "top_contact_heads": {"k": K}, "question": question,
            "answer": "The top 3 contact heads matter more than random groups of 3 heads."}  # fmt: skip


def new_question() -> dict:
    verdict = {"top": TOP, "median": 0.1, "q05": 0.02, "q95": 0.18, "rank_as_large": 0, "n_groups": 100,
               "p_value": 1 / 101, "difference": 0.32, "difference_low": 0.25, "difference_high": 0.39,
               "verdict": "more than"}  # fmt: skip
    return {"loss": {"random": verdict, "layer_matched": {**verdict, "n_groups": 50, "p_value": 1 / 51}}}


OLD_QUESTION = {"loss": {"top_contact": TOP, "random_mean": 0.1, "random_as_large": 0, "random_groups": 10,
                         "difference": 0.32, "difference_low": 0.25, "difference_high": 0.39}}  # fmt: skip


def write_run(directory, table: pd.DataFrame, info: dict):
    directory.mkdir(parents=True, exist_ok=True)
    table.to_csv(directory / "ablation.csv", index=False)
    (directory / "ablation.json").write_text(json.dumps(info))
    return directory


def distribution_axes(fig):
    """The figure's group panel: the axes whose title speaks of random groups."""
    found = [ax for ax in fig.axes if "random group" in " ".join(ax.get_title().split())]
    assert len(found) == 1
    return found[0]


def test_the_figure_draws_every_group_against_the_top_group():
    table, planted = ablation_table()
    fig = figures.ablation_figure(table, ablation_info(new_question()))
    try:
        ax = distribution_axes(fig)
        title = " ".join(ax.get_title().split())
        assert f"Top contact heads against 100 random groups of {K} heads" in title and "50 layer-matched" in title
        (top,) = [line for line in ax.get_lines() if line.get_label() == "top contact group"]
        assert top.get_xdata()[0] == pytest.approx(TOP)
        (median,) = [line for line in ax.get_lines() if line.get_label() == "median"]
        assert median.get_xdata()[0] == pytest.approx(np.median(planted["random"]))
        # One point per group, each kind in its own colour.
        points = [c for c in ax.collections if c.get_offsets().shape[0] > 1]
        assert sorted(len(c.get_offsets()) for c in points) == [50, 100]
        assert len({tuple(c.get_facecolor()[0]) for c in points}) == 2
        assert texts_outside_canvas(fig) == []
    finally:
        plt.close(fig)


@pytest.mark.parametrize(("n_random", "nan"), [(1, False), (3, True), (10, False)])
def test_the_figure_draws_few_groups_no_layer_matched_and_missing_values(n_random, nan):
    table, _ = ablation_table(n_random=n_random, n_matched=0)
    if nan:
        table.loc[table["kind"] == "random", "delta_loss"] = [np.nan, 0.1, 0.2]
        table.loc[table["kind"] == "top_contact", "delta_loss_low"] = np.nan
    fig = figures.ablation_figure(table.drop(columns="n_heads"), ablation_info(OLD_QUESTION))
    try:
        title = " ".join(distribution_axes(fig).get_title().split())
        assert f"{n_random} random group" in title and "layer-matched" not in title
        assert f"of {K} heads" in title  # the size from info when the table does not give it
        assert texts_outside_canvas(fig) == []
    finally:
        plt.close(fig)


def test_the_report_summarises_the_groups_instead_of_listing_them(tmp_path):
    table, planted = ablation_table()
    context = causal_context(write_run(tmp_path / "run", table, ablation_info(new_question())))["ablation"]
    names = [row[0] for row in context["table"].rows]
    assert names == ["baseline", "layer 1", "layer 2", "layer 3", f"top {K} contact"]
    summary = context["groups"]
    rows = {row[0]: dict(zip(summary.columns, row, strict=True)) for row in summary.rows}
    assert list(rows) == ["random groups (100)", "layer-matched groups (50)"]
    for name, kind in (("random groups (100)", "random"), ("layer-matched groups (50)", "layer_matched")):
        values = planted[kind]
        assert rows[name]["median Δ loss"] == fmt_number(np.median(values))
        assert rows[name]["5% Δ loss"] == fmt_number(np.quantile(values, 0.05))
        assert rows[name]["95% Δ loss"] == fmt_number(np.quantile(values, 0.95))
        assert rows[name]["groups as large"] == str(int((values >= TOP).sum()))
        assert rows[name]["heads each"] == str(K) and rows[name]["verdict"] == "more than"
    assert rows["random groups (100)"]["p"] == fmt_p(1 / 101)


def test_an_old_run_still_renders(tmp_path):
    table, planted = ablation_table(n_random=10, n_matched=0)
    run = write_run(tmp_path / "run", table.drop(columns="n_heads"), ablation_info(OLD_QUESTION))
    summary = causal_context(run)["ablation"]["groups"]
    (row,) = summary.rows
    row = dict(zip(summary.columns, row, strict=True))
    assert row["groups"] == "random groups (10)" and row["median Δ loss"] == fmt_number(np.median(planted["random"]))
    assert row["p"] == "–" and row["verdict"] == "–" and row["heads each"] == "–"
    (html,) = causal_sections(run)
    assert "random groups (10)" in html and "The top 3 contact heads" in html
    for question in (None, {"loss": None}, {"loss": {"random": "not a dict"}}):
        (html,) = causal_sections(write_run(tmp_path / "odd", table, ablation_info(question)))
        assert "random groups (10)" in html


def test_the_section_shows_the_summary_rows_escaped(tmp_path):
    table, _ = ablation_table()
    question = new_question()
    question["loss"]["layer_matched"]["verdict"] = "<script>alert(1)</script>"
    (html,) = causal_sections(write_run(tmp_path / "run", table, ablation_info(question)))
    assert "random groups (100)" in html and "layer-matched groups (50)" in html and "more than" in html
    assert "random 57" not in html and "layer_matched 3" not in html  # the groups are not listed one by one
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
