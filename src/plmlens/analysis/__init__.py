"""Analysis: how each attention head aligns with protein properties (the paper's section 3, appendix B).

::

    from plmlens.models import load_model
    from plmlens.proteins import iter_records
    from plmlens.analysis import analyze

    result = analyze(load_model("antiberty"), iter_records("antibodies::variable_domain"))
    result.top_heads("contact", k=10)          # pandas DataFrame
    result.save("runs/antiberty")              # heads.csv, layers.csv, amino_acids.csv, summary.json
"""

from plmlens.analysis.accumulator import Accumulator
from plmlens.analysis.properties import (
    DEFAULT_PROPERTIES,
    PROPERTIES,
    PROPERTY_GROUPS,
    Property,
    get_properties,
    register_property,
)
from plmlens.analysis.result import (
    HEAD_COLUMNS,
    MIN_ARCS,
    AnalysisResult,
    blosum62,
    blosum_correlation,
    centre_of_gravity,
    two_proportion_test,
)
from plmlens.analysis.run import RunState, analyze

__all__ = [
    "DEFAULT_PROPERTIES",
    "HEAD_COLUMNS",
    "MIN_ARCS",
    "PROPERTIES",
    "PROPERTY_GROUPS",
    "Accumulator",
    "AnalysisResult",
    "Property",
    "RunState",
    "analyze",
    "blosum62",
    "blosum_correlation",
    "centre_of_gravity",
    "get_properties",
    "register_property",
    "two_proportion_test",
]
