"""Properties that attention is measured against.

A property is a small object: a name, a kind, and a function that, given a `Protein`, returns its mask
with undefined entries masked out. ``pair`` properties give ``f(i, j)`` as an (L, L) masked array;
``token`` properties give ``g(j)`` as an (L,) masked array and mean ``f(i, j) = g(j)`` (attention *to*
residues with the property). Adding one needs no edit to plmlens::

    from plmlens.analysis import Property, register_property

    def cys_cys(protein):                       # f(i, j) = 1 when both residues are cysteines
        is_cys = np.array([c == "C" for c in protein.sequence])
        return np.ma.asarray(np.logical_and.outer(is_cys, is_cys))

    register_property(Property("cys_cys", "pair", cys_cys, "attention between cysteines", label="Cys–Cys"))
    # then: plmlens analyze ... --properties default,cys_cys   (from Python: analyze(..., properties=[...]))

Every per-residue label registered in `plmlens.proteins.labels` (`register_label`, at any time) becomes
TOKEN properties here by itself: a bool label one property, a categorical label one per chosen category
(true where the label equals it), undefined where the label is masked or the protein lacks it. Binding
sites, PTMs, secondary structure and the amino acids are labels too.

The registry is the one source of property names: ``describe``, ``analyze``, the report and compare read
each property's label, description, kind and family from here, so a registered property gets its heatmap,
top heads and layer profile in ``report.html`` and ``compare.html`` with no other edit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from plmlens.proteins import CONTACT_RANGES, STANDARD_AMINO_ACIDS, Protein, contact_map
from plmlens.proteins.annotations import contact_counts
from plmlens.proteins.labels import AMINO_ACIDS, LABELS, LabelSpec, subscribe_labels
from plmlens.proteins.numbering import CDRS, FRAMEWORK, SOMATIC_MUTATION

PAIR = "pair"
TOKEN = "token"


@dataclass(frozen=True)
class Property:
    """A protein property as an indicator over residue pairs or residues.

    Parameters
    ----------
    name : str
        Column value in the outputs (e.g. ``contact``, ``binding_site``, ``aa_P``).
    kind : {"pair", "token"}
        ``pair``: `function` returns an (L, L) masked bool array f(i, j). ``token``: it returns an (L,)
        masked bool array g(j), and f(i, j) = g(j).
    function : callable
        ``Protein -> numpy.ma.MaskedArray``; masked entries are undefined and are left out of
        numerators, denominators and backgrounds alike.
    description : str
        One line for reports.
    label : str
        Its name in figures and tables (default `name`).
    counter : callable, optional
        ``Protein -> (hits, defined)`` counted without the mask, for pair properties whose (L, L) mask would
        not fit in memory for very long chains (``plmlens proteins describe``); default: from `mask`.
    family : str, optional
        Properties drawn together in one panel of their own (the amino acids: ``amino_acids``); a property
        without a family gets its own heatmap, top heads and layer profile.
    """

    name: str
    kind: str
    function: Callable[[Protein], np.ma.MaskedArray]
    description: str = ""
    label: str = ""
    family: str | None = None
    counter: Callable[[Protein], tuple[int, int]] | None = None

    #: A weighted property's values are rates in [0, 1], not 0/1 (the nulls of `plmlens.analysis.nulls`).
    weighted = False

    def __post_init__(self) -> None:
        if self.kind not in (PAIR, TOKEN):
            raise ValueError(f"property {self.name!r}: kind must be 'pair' or 'token', not {self.kind!r}")

    def mask(self, protein: Protein) -> tuple[np.ndarray, np.ndarray]:
        """The property of `protein` as ``(values, defined)`` bool arrays, shape checked."""
        result = np.ma.asarray(self.function(protein))
        n = len(protein)
        expected = (n, n) if self.kind == PAIR else (n,)
        if result.shape != expected:
            raise ValueError(
                f"property {self.name!r} gave shape {result.shape} for {protein.id} (length {n}), expected {expected}"
            )
        defined = ~np.ma.getmaskarray(result)
        return np.asarray(result.filled(False), dtype=bool) & defined, defined

    def count(self, protein: Protein) -> tuple[int, int]:
        """The property's hits and defined entries in `protein`: the numerator and denominator of its
        background frequency."""
        if self.counter is not None:
            return self.counter(protein)
        values, defined = self.mask(protein)
        return int(values.sum()), int(defined.sum())


_last_labels = threading.local()


def _label_entry(protein: Protein, name: str) -> tuple[object, np.ma.MaskedArray | None, dict]:
    """``(stored, label, derived)`` of `Protein.label`, computed once for the properties that ask in a row
    (the amino acids: twenty properties of one label), per thread; `derived` caches what the properties
    compute from the label (its mask, its categories)."""
    cached = getattr(_last_labels, "value", None)
    # The sequence and DSSP are part of the key (a derived label follows them), the stored array too.
    key = (protein.sequence, protein.dssp)
    if cached is None or cached[0] is not protein or any(a is not b for a, b in zip(cached[1], key, strict=True)):
        cached = (protein, key, {})
        _last_labels.value = cached
    stored = protein.labels.get(name)
    entry = cached[2].get(name)
    if entry is None or entry[0] is not stored:
        entry = (stored, stored if stored is not None else protein.label(name), {})
        cached[2][name] = entry
    return entry


def _label_property(label: str, category: str | None) -> Callable[[Protein], np.ma.MaskedArray]:
    """The indicator of a label (bool: the label; category: label == category), masked where the label is
    undefined, everywhere when the protein has no such label."""

    def function(protein: Protein) -> np.ma.MaskedArray:
        _, values, derived = _label_entry(protein, label)
        if values is None:
            return np.ma.masked_all(len(protein), dtype=bool)
        if "mask" not in derived:
            derived["mask"] = np.ma.getmaskarray(values)
        if category is None:
            hits = np.asarray(np.ma.getdata(values), dtype=bool)
        else:
            if "codes" not in derived:  # one sort per protein, then one integer comparison per category
                derived["codes"] = np.unique(np.ma.getdata(values), return_inverse=True)
            categories, codes = derived["codes"]
            at = int(np.searchsorted(categories, category))
            found = at < len(categories) and categories[at] == category
            hits = codes == at if found else np.zeros(len(protein), dtype=bool)
        return np.ma.MaskedArray(hits, mask=derived["mask"].copy())

    return function


_last_contacts = threading.local()


def _contacts(protein: Protein) -> np.ma.MaskedArray:
    """`contact_map` of the protein, computed once for the four contact properties that ask in a row (per
    thread: batches are prepared in worker threads)."""
    cached = getattr(_last_contacts, "value", None)
    if cached is None or cached[0] is not protein:
        cached = (protein, contact_map(protein))
        _last_contacts.value = cached
    return cached[1]


def _contact_range(low: int, high: int | None) -> Callable[[Protein], np.ma.MaskedArray]:
    """Contacts at sequence separation ``low .. high``: `contact_map` with that window (``low`` >= 6), taken
    from the one distance computation of `_contacts`."""

    def function(protein: Protein) -> np.ma.MaskedArray:
        contacts = _contacts(protein)
        separation = np.abs(np.subtract.outer(np.arange(len(protein)), np.arange(len(protein))))
        window = separation >= low
        if high is not None:
            window &= separation <= high
        return np.ma.MaskedArray(contacts.data & window, mask=np.ma.getmaskarray(contacts))

    return function


def _contact_range_counts(low: int, high: int | None) -> Callable[[Protein], tuple[int, int]]:
    """`Property.count` of `_contact_range`, in memory linear in the length: contacts at separation ≥ low,
    less those beyond `high`, over every defined pair (`contact_counts`)."""

    def count(protein: Protein) -> tuple[int, int]:
        hits, defined = contact_counts(protein, min_separation=low)
        if high is not None:
            hits -= contact_counts(protein, min_separation=high + 1)[0]
        return hits, defined

    return count


def property_counters(properties: Iterable[Property]) -> dict[str, Callable[[Protein], tuple[int, int]]]:
    """Each property's `Property.count` by name, for `plmlens.proteins.describe`."""
    return {prop.name: prop.count for prop in properties}


PROPERTIES: dict[str, Property] = {}


def register_property(prop: Property) -> Property:
    """Add a property to the registry so `get_properties` and ``--properties`` find it by name."""
    PROPERTIES[prop.name] = prop
    return prop


def property_label(name: str) -> str:
    """The label of a property for figures and tables; a name the registry does not know (a property
    registered in another session) is its own label."""
    prop = PROPERTIES.get(name)
    return (prop.label or prop.name) if prop is not None else str(name)


def property_family(name: str) -> str | None:
    """The family a property is drawn with (``amino_acids``), or None for a property of its own."""
    prop = PROPERTIES.get(name)
    return prop.family if prop is not None else None


def headline_properties(names: Iterable[str]) -> list[str]:
    """Of `names`, those drawn on their own (no family): the registry's order, then unknown names as given."""
    present = [str(name) for name in dict.fromkeys(names)]
    known = [name for name in PROPERTIES if name in present and property_family(name) is None]
    return known + [name for name in present if name not in PROPERTIES]


def family_members(names: Iterable[str], family: str) -> list[str]:
    """Of `names`, the members of `family`, in the registry's order."""
    present = set(map(str, names))
    return [name for name, prop in PROPERTIES.items() if prop.family == family and name in present]


def amino_acid_property(letter: str) -> str:
    """The name of the property "attention to amino acid `letter`" (``aa_P``)."""
    return f"aa_{letter}"


register_property(Property("contact", PAIR, _contacts, "CA–CA < 8 Å, sequence separation ≥ 6", label="Contact",
                           counter=contact_counts))  # fmt: skip
for _range, (_low, _high) in CONTACT_RANGES.items():
    _span = f"{_low}–{_high}" if _high is not None else f"≥ {_low}"
    register_property(Property(f"contact_{_range}", PAIR, _contact_range(_low, _high),
                               f"contacts at separation {_span}", label=f"Contact ({_span})",
                               counter=_contact_range_counts(_low, _high)))  # fmt: skip
#: Property names by the label they come from (`label_properties`).
_LABEL_PROPERTIES: dict[str, list[str]] = {}


def _register_label_properties(spec: LabelSpec) -> None:
    """Register the TOKEN properties of a label (a `plmlens.proteins.labels` hook: labels registered at any
    time become properties); those of an earlier spec of the same name that the new one lacks go."""
    names = []
    for name, category in spec.property_categories().items():
        register_property(Property(name, TOKEN, _label_property(spec.name, category),
                                   spec.property_description(name), label=spec.property_label(name),
                                   family=spec.family))  # fmt: skip
        names.append(name)
    for stale in set(_LABEL_PROPERTIES.get(spec.name, ())) - set(names):
        PROPERTIES.pop(stale, None)
    _LABEL_PROPERTIES[spec.name] = names


def label_properties(label: str) -> list[Property]:
    """The properties a label gives (none for a label with no registered spec, or one not `counted`)."""
    spec = LABELS.get(label)
    if spec is None or not spec.counted:
        return []
    return [PROPERTIES[name] for name in _LABEL_PROPERTIES.get(label, ()) if name in PROPERTIES]


def label_property_names() -> list[str]:
    """Every property that comes from a label (counted or not), in registry order: the per-residue
    probing tasks (`plmlens.probing.tasks`)."""
    names = {name for names in _LABEL_PROPERTIES.values() for name in names}
    return [name for name in PROPERTIES if name in names]


# binding_site, ptm, helix / strand / turn_bend and aa_A .. aa_Y come from their labels, in this order.
subscribe_labels(_register_label_properties)

#: The default set: the paper's properties (contacts, binding sites, PTMs, secondary structure, amino acids).
DEFAULT_PROPERTIES = (
    "contact", "binding_site", "ptm", "helix", "strand", "turn_bend",
    *(amino_acid_property(letter) for letter in STANDARD_AMINO_ACIDS),
)  # fmt: skip

#: Named groups usable in ``--properties``.
PROPERTY_GROUPS: dict[str, tuple[str, ...]] = {
    "default": DEFAULT_PROPERTIES,
    "contact_ranges": ("contact_short", "contact_medium", "contact_long"),
    "secondary_structure": ("helix", "strand", "turn_bend"),
    AMINO_ACIDS: tuple(amino_acid_property(letter) for letter in STANDARD_AMINO_ACIDS),
    # The antibody concepts of the numbering= labels (plmlens.proteins.numbering): CDRs, framework, somatic
    # mutations; undefined (and left out) for chains that are not numbered.
    "antibody": (*CDRS, FRAMEWORK, SOMATIC_MUTATION),
}


def get_properties(names: Iterable[str | Property] | None = None) -> list[Property]:
    """Properties by name or group name (``default``, ``contact_ranges``, ``secondary_structure``, ``antibody``,
    ``amino_acids``), in order, without duplicates.

    Raises
    ------
    KeyError
        Naming the unknown property and listing the known ones.
    """
    chosen: dict[str, Property] = {}
    for item in names if names is not None else DEFAULT_PROPERTIES:
        if isinstance(item, Property):
            chosen[item.name] = item
            continue
        for name in PROPERTY_GROUPS.get(item, (item,)):
            if name not in PROPERTIES:
                known = ", ".join([*PROPERTY_GROUPS, *PROPERTIES])
                raise KeyError(f"unknown property {name!r}; known: {known}")
            chosen[name] = PROPERTIES[name]
    return list(chosen.values())
