"""Report: the paper's figures for any model shape, attention drawn on 3D structure, an offline HTML page,
and comparisons of several runs."""

from plmlens.report.causal import coupling_view, save_ablation_figure, save_jacobian_figure
from plmlens.report.compare import CompareError, Run, compare_runs, load_run
from plmlens.report.examples import NoExamplesError, collect_examples, examples_for_run
from plmlens.report.run_report import (
    REPORT_OUTPUTS,
    ReportFigure,
    build_report,
    register_report_figure,
    write_figures,
)
from plmlens.report.view import AttentionView, ViewerError, ngl_javascript

__all__ = [
    "REPORT_OUTPUTS",
    "AttentionView",
    "CompareError",
    "NoExamplesError",
    "ReportFigure",
    "Run",
    "ViewerError",
    "build_report",
    "collect_examples",
    "compare_runs",
    "coupling_view",
    "examples_for_run",
    "load_run",
    "ngl_javascript",
    "register_report_figure",
    "save_ablation_figure",
    "save_jacobian_figure",
    "write_figures",
]
