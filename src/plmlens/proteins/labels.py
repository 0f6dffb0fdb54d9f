"""Open per-residue labels: what each label means (`LabelSpec`) and what makes it (`Annotator`).

A label is a per-residue array on a `Protein` (``protein.labels[NAME]``, `Protein.add_label`): bool (the
residue has it or not) or categorical (str, one category per residue), masked where undefined. Protein
sets keep labels; a registered `LabelSpec` turns each into analysis properties with no further edit — a
bool label gives one property, a categorical one a property per category (as the amino acids do)::

    from plmlens.proteins.labels import Annotator, LabelSpec, register_annotator, register_label

    register_label(LabelSpec("glyco", "bool", "N-glycosylation sequons (N-X-S/T)", label="Sequon"))

    def sequons(proteins, value):            # mutates the batch; never drops a record
        for protein in proteins:
            s = protein.sequence
            protein.add_label("glyco", [s[i] == "N" and s[i + 2 : i + 3] in ("S", "T") and s[i + 1] != "P"
                                        for i in range(len(s) - 2)] + [False, False])

    register_annotator(Annotator("sequons", "marks N-X-S/T sequons", option="sequons", choices=("true",),
                                 labels=("glyco",), function=sequons))
    # then: plmlens analyze --data 'shared/data/antibodies::sequons' --properties default,glyco ...

An annotator runs on every record of a SOURCE that names its option (`plmlens.proteins.sources`); a
protein it cannot label keeps its record, without the label (undefined at every residue), and the reason
in ``protein.meta["unlabelled"][ANNOTATOR]`` (``plmlens proteins describe`` counts them).

The label ``binding_site`` / ``ptm`` (bool, from structures and the paper's datasets), the derived
``secondary_structure`` (from DSSP: helix / strand / turn_bend / other) and ``amino_acid`` (from the
sequence) are registered here: the paper's properties come from this same path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from plmlens.proteins.record import LABEL_NAME, SS_CLASSES, SS_UNKNOWN, STANDARD_AMINO_ACIDS, Protein
from plmlens.proteins.skips import Skipped

BOOL = "bool"
CATEGORY = "category"


@dataclass(frozen=True)
class LabelSpec:
    """What a per-residue label means, and the properties it gives.

    Parameters
    ----------
    name : str
        The label's name in ``Protein.labels`` (an identifier).
    kind : {"bool", "category"}
        Bool: one property, the label itself. Category: one property per category in `properties`,
        true where the label equals that category.
    description : str
        One line saying what the label marks.
    label : str
        Its display name (default `name`).
    categories : tuple of str
        The categories of a categorical label (values outside them are defined, in no category).
    properties : tuple of str, optional
        Bool: the property names (default ``(name,)``). Category: the categories that become properties
        (default all).
    property_names : dict of str to str
        Category → property name (default ``f"{name}_{category}"``).
    property_labels : dict of str to str
        Property name → display label (default: the label, and the category for a categorical one).
    property_descriptions : dict of str to str
        Property name → one line for reports (default made from `label`).
    family : str, optional
        Properties drawn together in one panel (like the amino acids); None: each its own.
    derive : callable, optional
        ``Protein -> MaskedArray | None``: the label computed from the record itself, used by
        `Protein.label` when the protein holds no stored label of that name (None: the protein has none).
    counted : bool
        Whether ``plmlens proteins describe`` counts its properties.
    """

    name: str
    kind: str
    description: str = ""
    label: str = ""
    categories: tuple[str, ...] = ()
    properties: tuple[str, ...] | None = None
    property_names: dict[str, str] = field(default_factory=dict)
    property_labels: dict[str, str] = field(default_factory=dict)
    property_descriptions: dict[str, str] = field(default_factory=dict)
    family: str | None = None
    derive: Callable[[Protein], np.ma.MaskedArray | None] | None = None
    counted: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not LABEL_NAME.fullmatch(self.name) or len(self.name) > 64:
            raise ValueError(f"label name {self.name!r:.80} is not an identifier of at most 64 characters")
        if self.kind not in (BOOL, CATEGORY):
            raise ValueError(f"label {self.name!r}: kind must be 'bool' or 'category', not {self.kind!r}")
        if self.kind == CATEGORY:
            if not self.categories:
                raise ValueError(f"label {self.name!r}: a categorical label needs its categories")
            unknown = sorted(set(self.properties or ()) - set(self.categories))
            if unknown:
                raise ValueError(f"label {self.name!r}: properties {unknown} are not among its categories")

    @property
    def display(self) -> str:
        """The display name: `label`, or the name."""
        return self.label or self.name

    def property_categories(self) -> dict[str, str | None]:
        """Property name → the category it tests (None for a bool label's property), in order."""
        if self.kind == BOOL:
            return {name: None for name in (self.properties or (self.name,))}
        chosen = self.properties if self.properties is not None else self.categories
        return {self.property_names.get(c, f"{self.name}_{c}"): c for c in chosen}

    def property_label(self, prop: str) -> str:
        """The display label of one of its properties."""
        if prop in self.property_labels:
            return self.property_labels[prop]
        category = self.property_categories().get(prop)
        return self.display if category is None else f"{self.display}: {category}"

    def property_description(self, prop: str) -> str:
        """The one-line description of one of its properties."""
        if prop in self.property_descriptions:
            return self.property_descriptions[prop]
        category = self.property_categories().get(prop)
        if category is None:
            return f"attention to residues labelled {self.display}"
        return f"attention to residues whose {self.display} is {category}"


LABELS: dict[str, LabelSpec] = {}
#: Called with each spec `register_label` adds (and, on subscribing, with those already there):
#: `plmlens.analysis.properties` subscribes, so that labels registered later still become properties.
LABEL_HOOKS: list[Callable[[LabelSpec], None]] = []


def register_label(spec: LabelSpec) -> LabelSpec:
    """Add a label to the registry (replacing one of the same name) and tell the hooks."""
    LABELS[spec.name] = spec
    for hook in list(LABEL_HOOKS):
        hook(spec)
    return spec


def subscribe_labels(hook: Callable[[LabelSpec], None]) -> None:
    """Call `hook` with every registered label now, in order, and with every one registered later."""
    LABEL_HOOKS.append(hook)
    for spec in list(LABELS.values()):
        hook(spec)


def label_spec(name: str) -> LabelSpec:
    """The registered spec of a label.

    Raises
    ------
    KeyError
        Naming the label and listing the known ones.
    """
    if name not in LABELS:
        raise KeyError(f"unknown label {name!r}; known: {', '.join(LABELS)}")
    return LABELS[name]


@dataclass(frozen=True)
class Annotator:
    """A function that adds labels to proteins, switched on by a SOURCE option.

    Parameters
    ----------
    name : str
        Its name (in ``meta["unlabelled"]`` and ``describe``).
    description : str
        One line.
    option : str
        The SOURCE option that switches it on (``LOCATION::OPTION=VALUE``); accepted for every source kind.
    choices : tuple of str, optional
        The values the option may take (None: any). An option given without a value reads ``"true"``.
    labels : tuple of str
        The labels it writes.
    function : callable
        ``(proteins, value) -> None``: labels a batch of proteins in place (`Protein.add_label`, and
        ``meta["unlabelled"][name] = reason`` for one it cannot label). It never drops a record.
    """

    name: str
    description: str
    option: str
    choices: tuple[str, ...] | None
    labels: tuple[str, ...]
    function: Callable[[Sequence[Protein], str], None]


ANNOTATORS: dict[str, Annotator] = {}


def register_annotator(annotator: Annotator) -> Annotator:
    """Add an annotator to the registry (replacing one of the same name)."""
    ANNOTATORS[annotator.name] = annotator
    return annotator


def annotator_options() -> dict[str, Annotator]:
    """The SOURCE option of every registered annotator, and the annotator."""
    return {annotator.option: annotator for annotator in ANNOTATORS.values()}


def check_annotator_options(options: dict[str, str], where: str) -> None:
    """Check the values of annotator options.

    Raises
    ------
    ValueError
        One line, naming `where`, the option and the allowed values.
    """
    for option, annotator in annotator_options().items():
        value = options.get(option)
        if value is not None and annotator.choices is not None and value not in annotator.choices:
            raise ValueError(f"{where}: {option} must be one of {', '.join(annotator.choices)}, not {value!r:.80}")


def mark_unlabelled(protein: Protein, annotator: str, reason: str) -> None:
    """Record on `protein` why `annotator` could not label it (one line)."""
    protein.meta.setdefault("unlabelled", {})[annotator] = " ".join(str(reason).split())


def annotate(
    records: Iterable[Protein | Skipped], options: dict[str, str], batch_size: int = 256
) -> Iterator[Protein | Skipped]:
    """Apply every annotator whose option is in `options` to the proteins of `records`, in batches of
    `batch_size` proteins.

    Records come out in order, skipped ones untouched. An annotator that raises on a batch does not drop
    it: each protein of the batch keeps its record and the error as its ``meta["unlabelled"]`` reason.
    """
    chosen = [(a, options[a.option]) for a in ANNOTATORS.values() if a.option in options]
    if not chosen:
        yield from records
        return
    batch: list[Protein | Skipped] = []
    proteins = 0
    for record in records:
        batch.append(record)
        proteins += isinstance(record, Protein)
        if proteins >= batch_size:  # `batch_size` proteins, with the skipped records between them
            yield from _annotate_batch(batch, chosen)
            batch, proteins = [], 0
    if batch:
        yield from _annotate_batch(batch, chosen)


def _annotate_batch(batch: list[Protein | Skipped], chosen: list[tuple[Annotator, str]]) -> list[Protein | Skipped]:
    proteins = [record for record in batch if isinstance(record, Protein)]
    if proteins:
        for annotator, value in chosen:
            try:
                annotator.function(proteins, value)
            except Exception as error:
                # The records stay, unlabelled, with the reason (describe reports it).
                reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                for protein in proteins:
                    for name in annotator.labels:
                        protein.labels.pop(name, None)
                    mark_unlabelled(protein, annotator.name, reason)
    return batch


# -- the built-in labels ---------------------------------------------------------------------------------

SECONDARY_STRUCTURE = "secondary_structure"
AMINO_ACID = "amino_acid"
AMINO_ACIDS = "amino_acids"


_SS_NAMES = np.array([*SS_CLASSES, "other"], dtype="<U9")
#: Byte value of a DSSP letter → index in `_SS_NAMES` (the other class for every letter not in a class).
_SS_TABLE = np.full(256, len(SS_CLASSES), dtype=np.intp)
for _index, _letters in enumerate(SS_CLASSES.values()):
    _SS_TABLE[np.frombuffer(_letters.encode("ascii"), dtype=np.uint8)] = _index


def _secondary_structure(protein: Protein) -> np.ma.MaskedArray:
    """The paper's secondary-structure class of each residue, masked where DSSP is unknown (everywhere
    without DSSP)."""
    if protein.dssp is None:
        return np.ma.masked_all(len(protein), dtype="<U9")
    states = np.frombuffer(protein.dssp.encode("ascii", "replace"), dtype=np.uint8)
    return np.ma.MaskedArray(_SS_NAMES[_SS_TABLE[states]], mask=states == ord(SS_UNKNOWN))


def _amino_acid(protein: Protein) -> np.ma.MaskedArray:
    """Each residue's one-letter code (``X`` is defined and in no category)."""
    return np.ma.MaskedArray(np.frombuffer(protein.sequence.encode("ascii"), dtype="S1").astype("<U1"))


register_label(LabelSpec("binding_site", BOOL, "binding-site residues", label="Binding site",
                         property_descriptions={"binding_site": "attention to binding-site residues"}))  # fmt: skip
_PTM = "attention to post-translationally modified residues"
register_label(LabelSpec("ptm", BOOL, "post-translationally modified residues", label="PTM",
                         property_descriptions={"ptm": _PTM}))  # fmt: skip
register_label(LabelSpec(
    SECONDARY_STRUCTURE, CATEGORY, "secondary structure class from DSSP (helix H G I, strand E B, turn/bend T S)",
    label="Secondary structure", categories=(*SS_CLASSES, "other"), properties=tuple(SS_CLASSES),
    property_names={name: name for name in SS_CLASSES},
    property_labels={"helix": "Helix", "strand": "Strand", "turn_bend": "Turn/Bend"},
    property_descriptions={"helix": "attention to helix residues (DSSP H, G, I)",
                           "strand": "attention to strand residues (DSSP E, B)",
                           "turn_bend": "attention to turn/bend residues (T, S)"},
    derive=_secondary_structure,
))  # fmt: skip
register_label(LabelSpec(
    AMINO_ACID, CATEGORY, "the residue's amino acid", label="Amino acid", categories=tuple(STANDARD_AMINO_ACIDS),
    property_names={a: f"aa_{a}" for a in STANDARD_AMINO_ACIDS},
    property_labels={f"aa_{a}": f"Amino acid {a}" for a in STANDARD_AMINO_ACIDS},
    property_descriptions={f"aa_{a}": f"attention to amino acid {a}" for a in STANDARD_AMINO_ACIDS},
    family=AMINO_ACIDS, derive=_amino_acid,
))  # fmt: skip
