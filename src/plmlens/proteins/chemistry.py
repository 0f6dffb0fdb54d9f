"""Residue and ligand vocabularies: which residues are amino acids, which hetero groups are ligands,
and which chemical modifications count as post-translational modifications (PTMs).

The lists are deliberately explicit so that users can read (and extend) exactly what plmlens counts.
"""

from __future__ import annotations

import gemmi

from plmlens.proteins.record import STANDARD_AMINO_ACIDS

THREE_TO_ONE: dict[str, str] = {
    "ALA": "A", "CYS": "C", "ASP": "D", "GLU": "E", "PHE": "F", "GLY": "G", "HIS": "H", "ILE": "I",
    "LYS": "K", "LEU": "L", "MET": "M", "ASN": "N", "PRO": "P", "GLN": "Q", "ARG": "R", "SER": "S",
    "THR": "T", "VAL": "V", "TRP": "W", "TYR": "Y",
}  # fmt: skip

WATER = frozenset({"HOH", "WAT", "H2O", "DOD", "D2O"})

#: Hetero groups that are present because of how the crystal was grown or the buffer it sat in, not
#: because the protein binds them in vivo. They are not ligands for binding-site annotation.
#: Biologically relevant metal ions (Zn, Mg, Ca, Mn, Fe, Cu, Co, Ni) are kept as ligands.
CRYSTALLISATION_ADDITIVES = frozenset({
    # buffer and salt ions
    "SO4", "PO4", "CL", "NA", "K", "BR", "IOD", "NO3", "NH4", "SCN", "CS", "LI", "RB", "F", "AZI", "CYN",
    "CD", "HG", "PT", "AU", "TL",  # heavy-atom soaks for phasing
    # cryoprotectants, precipitants, detergents, solvents
    "GOL", "EDO", "PEG", "PGE", "PG4", "1PE", "P6G", "2PE", "PE4", "PE5", "15P", "P33", "12P", "MPD",
    "DMS", "DMF", "IPA", "EOH", "MOH", "ACN", "BU3", "PGO", "PGR", "BOG", "LDA", "SDS", "C8E", "MRD",
    "HEZ", "TBU",
    # buffers and their counter-ions
    "TRS", "EPE", "MES", "HEPES", "PIPES", "MPO", "CAC", "IMD", "BTB", "B3P", "CXS", "MOPS",
    # small organic acids and salts used in crystallisation
    "ACT", "ACY", "FMT", "CIT", "FLC", "MLI", "MLA", "TAR", "TLA", "SIN", "MAL", "OXL", "BCT", "NHE",
    # reducing agents
    "BME", "DTT", "DTU", "TCE",
    # unknown atoms / ions
    "UNX", "UNL",
})  # fmt: skip

#: Sugar residues; a standard residue covalently linked to one of these is glycosylated.
GLYCANS = frozenset({
    "NAG", "NDG", "BMA", "MAN", "BGC", "GLC", "GAL", "GLA", "FUC", "FUL", "SIA", "SLB", "XYS", "XYP",
    "A2G", "NGA", "GCS", "GLB", "FCA", "NGC", "BDP", "GCU", "IDR", "RAM", "ARA", "AHR", "Z9N", "KDN",
})  # fmt: skip

#: Modified residues that count as post-translational modifications, by chemical class.
PTM_RESIDUES: dict[str, str] = {
    # phosphorylation
    "SEP": "phosphorylation", "TPO": "phosphorylation", "PTR": "phosphorylation", "NEP": "phosphorylation",
    "HIP": "phosphorylation", "PHD": "phosphorylation",
    # methylation
    "MLY": "methylation", "MLZ": "methylation", "M3L": "methylation", "2MR": "methylation",
    "AGM": "methylation", "DA2": "methylation", "MEQ": "methylation", "MHS": "methylation",
    "MEN": "methylation", "NMM": "methylation",
    # acetylation
    "ALY": "acetylation", "SAC": "acetylation", "AYA": "acetylation", "TH5": "acetylation",
    # hydroxylation
    "HYP": "hydroxylation", "HY3": "hydroxylation", "LYZ": "hydroxylation", "HZP": "hydroxylation",
    # carboxylation
    "KCX": "carboxylation", "CGU": "carboxylation",
    # cysteine oxidation and nitrosylation
    "CSO": "oxidation", "CSD": "oxidation", "CSX": "oxidation", "OCS": "oxidation", "SNC": "nitrosylation",
    "CSS": "persulfide",
    # lipidation
    "MYR": "lipidation", "PLM": "lipidation", "FAR": "lipidation", "GER": "lipidation",
    # others
    "PCA": "pyroglutamate", "FME": "formylation", "LLP": "pyridoxal-lysine", "SUO": "sulfonation",
    "TYS": "sulfation", "NIY": "nitration", "HTR": "hydroxylation", "TYI": "iodination",
}  # fmt: skip

#: Modified residues that are *not* PTMs: experimental artefacts, engineered substitutions, chemical
#: caps of synthetic peptides. They are still mapped to their parent residue in the sequence.
NOT_PTM_RESIDUES: dict[str, str] = {
    "MSE": "selenomethionine, introduced for phasing",
    "CAS": "S-dimethylarsinoyl-cysteine, adduct of the cacodylate buffer",
    "CME": "S,S-(2-hydroxyethyl)thiocysteine, adduct of 2-mercaptoethanol",
    "CSW": "cysteine-S-dioxide from X-ray damage",
    "ABA": "alpha-aminobutyric acid, engineered replacement of Cys in synthetic proteins",
    "NLE": "norleucine, engineered replacement of Met",
    "ACE": "acetyl cap of a synthetic peptide",
    "NH2": "amide cap of a synthetic peptide",
    "UNK": "unknown residue",
}

#: All standard residues that can carry a glycan (N-linked Asn; O-linked Ser/Thr; C-linked Trp).
GLYCOSYLATABLE = frozenset({"ASN", "SER", "THR", "TRP", "LYS", "HYP"})


def residue_letter(name: str, parents: dict[str, str] | None = None) -> str:
    """The one-letter code of a residue, mapping modified residues to their parent first.

    Parameters
    ----------
    name : str
        Residue (chemical component) name, e.g. ``ALA`` or ``TPO``.
    parents : dict, optional
        Modified residue → parent residue, from the file's MODRES / ``pdbx_struct_mod_residue``
        records; consulted before gemmi's table of common modified residues.

    Returns
    -------
    str
        One of the 20 standard letters, or ``X`` for anything else (including non-standard amino acids
        such as selenocysteine, whose parent is not among the 20).
    """
    if name in THREE_TO_ONE:
        return THREE_TO_ONE[name]
    if parents and name in parents and parents[name] in THREE_TO_ONE:
        return THREE_TO_ONE[parents[name]]
    info = gemmi.find_tabulated_residue(name)
    if info is not None and info.is_amino_acid():
        letter = info.one_letter_code.upper()
        if letter in STANDARD_AMINO_ACIDS:
            return letter
    return "X"


def is_amino_acid(name: str, parents: dict[str, str] | None = None) -> bool:
    """Whether a residue is an amino acid (standard, modified, or a known non-standard one)."""
    if name in THREE_TO_ONE or (parents and name in parents):
        return True
    info = gemmi.find_tabulated_residue(name)
    return info is not None and info.is_amino_acid()


def is_ligand(name: str) -> bool:
    """Whether a hetero group counts as a ligand: not water, not a crystallisation additive."""
    return name not in WATER and name not in CRYSTALLISATION_ADDITIVES
