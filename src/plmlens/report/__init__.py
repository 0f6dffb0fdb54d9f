"""Report: the paper's figures for any model shape, attention drawn on 3D structure, an offline HTML page,
and comparisons of several runs."""

from plmlens.report.causal import save_ablation_figure, save_jacobian_figure
from plmlens.report.compare import CompareError, Run, compare_runs, load_run
from plmlens.report.run_report import REPORT_OUTPUTS, build_report, write_figures
from plmlens.report.view import AttentionView, ViewerError, ngl_javascript

__all__ = [
    "REPORT_OUTPUTS",
    "AttentionView",
    "CompareError",
    "Run",
    "ViewerError",
    "build_report",
    "compare_runs",
    "load_run",
    "ngl_javascript",
    "save_ablation_figure",
    "save_jacobian_figure",
    "write_figures",
]
