"""Probing: what each layer's embeddings and attention know (appendix B.3), and contact prediction from
attention by L1 logistic regression over all heads (Rao et al. 2021)."""

from plmlens.probing.metrics import apc, contact_precisions, f1_from_counts, precision_at_k
from plmlens.probing.regression import ContactRegression
from plmlens.probing.run import PROBE_OUTPUTS, TASKS, ProbeResult, probe, split_proteins
from plmlens.probing.tasks import HEADLINES, Headline

__all__ = [
    "HEADLINES",
    "PROBE_OUTPUTS",
    "TASKS",
    "ContactRegression",
    "Headline",
    "ProbeResult",
    "apc",
    "contact_precisions",
    "f1_from_counts",
    "precision_at_k",
    "probe",
    "split_proteins",
]
