"""Report: the paper's figures for any model shape, attention drawn on 3D structure, an offline HTML page."""

from plmlens.report.run_report import build_report, write_figures
from plmlens.report.view import AttentionView, ViewerError, ngl_javascript

__all__ = ["AttentionView", "ViewerError", "build_report", "ngl_javascript", "write_figures"]
