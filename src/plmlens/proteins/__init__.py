"""Proteins: the `Protein` record, its annotations, and the loaders that yield it.

Everything downstream reads proteins through this subpackage::

    from plmlens.proteins import iter_proteins, contact_map
    for protein in iter_proteins("shared/data/structures"):
        contacts = contact_map(protein)          # masked (L, L) bool
"""

from plmlens.proteins.annotations import (
    CONTACT_RANGES,
    contact_map,
    cut_variable_domain,
    residues_near,
    variable_domain_end,
    virtual_cb,
)
from plmlens.proteins.datasets import read_dataset, read_fasta, record_to_protein
from plmlens.proteins.describe import Description, describe
from plmlens.proteins.fingerprint import source_fingerprint
from plmlens.proteins.ids import DuplicateIdWarning, unique_ids
from plmlens.proteins.labels import (
    ANNOTATORS,
    LABELS,
    Annotator,
    LabelSpec,
    annotate,
    label_spec,
    register_annotator,
    register_label,
)
from plmlens.proteins.numbering import number_sequences, numbering_summary  # registers numbering= too
from plmlens.proteins.promod3 import StructureDB
from plmlens.proteins.record import SS_CLASSES, STANDARD_AMINO_ACIDS, Protein, ProteinError
from plmlens.proteins.skips import Skipped
from plmlens.proteins.sources import Source, SourceError, iter_proteins, iter_records, load_proteins
from plmlens.proteins.store import read_protein_set, save_protein_set
from plmlens.proteins.structure import StructureOptions, read_structure_file

__all__ = [
    "ANNOTATORS",
    "CONTACT_RANGES",
    "LABELS",
    "SS_CLASSES",
    "STANDARD_AMINO_ACIDS",
    "Annotator",
    "Description",
    "DuplicateIdWarning",
    "LabelSpec",
    "Protein",
    "ProteinError",
    "Skipped",
    "Source",
    "SourceError",
    "StructureDB",
    "StructureOptions",
    "annotate",
    "contact_map",
    "cut_variable_domain",
    "describe",
    "iter_proteins",
    "iter_records",
    "label_spec",
    "load_proteins",
    "number_sequences",
    "numbering_summary",
    "read_dataset",
    "read_fasta",
    "read_protein_set",
    "read_structure_file",
    "record_to_protein",
    "register_annotator",
    "register_label",
    "residues_near",
    "save_protein_set",
    "source_fingerprint",
    "unique_ids",
    "variable_domain_end",
    "virtual_cb",
]
