"""Numbers as the pages and the terminal show them: one formatter for each kind of number, so that the same
value reads the same in ``report.html``, ``compare.html`` and ``plmlens compare``."""

from __future__ import annotations

import math

import pandas as pd


def is_missing(value: object) -> bool:
    """None, pandas' NA, or a float that is not finite."""
    return value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value))


def fmt_number(value: object, digits: int = 3) -> str:
    """`digits` significant digits (whole numbers from 1,000 up), "–" for missing."""
    if is_missing(value):
        return "–"
    number = float(value)  # type: ignore[arg-type]
    return f"{number:,.0f}" if abs(number) >= 1000 else f"{number:.{digits}g}"


def fmt_percent(value: object) -> str:
    """A share (0–1) as a percentage with one decimal (two significant digits below 0.1%)."""
    if is_missing(value):
        return "–"
    percent = 100 * float(value)  # type: ignore[arg-type]
    return f"{percent:.2g}%" if 0 < abs(percent) < 0.1 else f"{percent:.1f}%"


def fmt_p(value: object) -> str:
    """A p-value: 3 significant digits, scientific below 0.001, and "< 1e-300" where it underflowed to 0."""
    if is_missing(value):
        return "–"
    number = float(value)  # type: ignore[arg-type]
    if number == 0:
        return "< 1e-300"
    return f"{number:.2e}" if number < 1e-3 else f"{number:.3g}"


def fmt_count(value: object) -> str:
    """A count with thousands separators."""
    return "–" if is_missing(value) else f"{int(value):,}"  # type: ignore[call-overload]


def fmt_parameters(value: object) -> str:
    """A parameter count in millions or billions."""
    if is_missing(value):
        return "–"
    number = float(value)  # type: ignore[arg-type]
    return f"{number / 1e9:.3g} B" if number >= 1e9 else f"{number / 1e6:.3g} M"
