"""Analysis: how each attention head aligns with protein properties (the paper's section 3, appendix B).

::

    from plmlens.models import load_model
    from plmlens.proteins import iter_records
    from plmlens.analysis import analyze

    result = analyze(load_model("antiberty"), iter_records("antibodies::variable_domain"))
    result.top_heads("contact", k=10)          # pandas DataFrame
    result.save("runs/antiberty")              # heads.csv, layers.csv, amino_acids.csv, summary.json
"""

from plmlens.analysis.accumulator import Accumulator, AccumulatorBatch, AccumulatorFileError
from plmlens.analysis.checkpoint import CheckpointError
from plmlens.analysis.properties import (
    AMINO_ACIDS,
    DEFAULT_PROPERTIES,
    PROPERTIES,
    PROPERTY_GROUPS,
    Property,
    amino_acid_property,
    family_members,
    get_properties,
    headline_properties,
    label_properties,
    label_property_names,
    property_counters,
    property_family,
    property_label,
    register_property,
)
from plmlens.analysis.result import (
    HEAD_COLUMNS,
    MIN_ARCS,
    POSITIONAL_COLUMNS,
    RUN_OUTPUTS,
    SHARD_OUTPUTS,
    AnalysisResult,
    blosum62,
    blosum_correlation,
    centre_of_gravity,
    two_proportion_test,
)
from plmlens.analysis.run import RunInterrupted, RunState, analyze, default_max_tokens, pack_batches
from plmlens.analysis.shards import MergeError, merge_runs, save_shard

__all__ = [
    "AMINO_ACIDS",
    "DEFAULT_PROPERTIES",
    "HEAD_COLUMNS",
    "MIN_ARCS",
    "POSITIONAL_COLUMNS",
    "PROPERTIES",
    "PROPERTY_GROUPS",
    "RUN_OUTPUTS",
    "SHARD_OUTPUTS",
    "Accumulator",
    "AccumulatorBatch",
    "AccumulatorFileError",
    "AnalysisResult",
    "CheckpointError",
    "MergeError",
    "Property",
    "RunInterrupted",
    "RunState",
    "amino_acid_property",
    "analyze",
    "blosum62",
    "blosum_correlation",
    "centre_of_gravity",
    "default_max_tokens",
    "family_members",
    "get_properties",
    "headline_properties",
    "label_properties",
    "label_property_names",
    "merge_runs",
    "pack_batches",
    "property_counters",
    "property_family",
    "property_label",
    "register_property",
    "save_shard",
    "two_proportion_test",
]
