"""From correlation to cause: what the model uses (head ablation) and what its output knows about contacts
(the categorical Jacobian).

`HeadAblation` knocks heads out of any supported model for the duration of a ``with`` block; `ablate`
measures what each head and group of heads costs the model; `jacobian` reads contact maps from a masked
language model's own logits and scores them beside the attention baselines. Results save data only (CSV,
JSON, npz); `plmlens.report` draws their figures.
"""

from plmlens.causal.ablation import (
    ABLATION_OUTPUTS,
    Ablation,
    AblationResult,
    ablate,
    answer_text,
    compare_with_groups,
    standard_ablations,
    top_contact_heads,
)
from plmlens.causal.heads import (
    ABLATION_MODES,
    AblationUnsupportedError,
    GroupAblation,
    HeadAblation,
    head_projections,
    mean_head_outputs,
    record_head_outputs,
)
from plmlens.causal.jacobian import (
    JACOBIAN_OUTPUTS,
    JacobianResult,
    JacobianUnsupportedError,
    categorical_jacobian,
    jacobian,
    jacobian_contacts,
    protein_jacobian_contacts,
    read_jacobian_maps,
    top_couplings,
)
from plmlens.causal.statistics import head_correlation, loss_and_alignment, loss_contact_correlation

__all__ = [
    "ABLATION_MODES",
    "ABLATION_OUTPUTS",
    "JACOBIAN_OUTPUTS",
    "Ablation",
    "AblationResult",
    "AblationUnsupportedError",
    "GroupAblation",
    "HeadAblation",
    "JacobianResult",
    "JacobianUnsupportedError",
    "ablate",
    "answer_text",
    "categorical_jacobian",
    "compare_with_groups",
    "head_correlation",
    "head_projections",
    "jacobian",
    "jacobian_contacts",
    "loss_and_alignment",
    "loss_contact_correlation",
    "mean_head_outputs",
    "protein_jacobian_contacts",
    "read_jacobian_maps",
    "record_head_outputs",
    "standard_ablations",
    "top_contact_heads",
    "top_couplings",
]
