"""Protein ids that are unique within a run.

Ids key what plmlens writes per protein (Jacobian maps, report examples, skip lines), but sources do not
promise unique ids: two files named alike in different folders, a FASTA with repeated headers or a
crafted protein set can all repeat one. `unique_ids` keeps the first protein of an id as it is, names
each later one ``ID#2``, ``ID#3``, ... (keeping the original in ``meta["original_id"]``), and warns once
per stream.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

from plmlens.proteins.record import Protein
from plmlens.proteins.skips import Skipped


class DuplicateIdWarning(UserWarning):
    """Proteins of one source share an id; later ones were renamed ``ID#2``, ``ID#3``, ..."""


def unique_ids(records: Iterable[Protein | Skipped], where: str = "the proteins") -> Iterator[Protein | Skipped]:
    """The records with every protein's id made unique (see the module docstring).

    Parameters
    ----------
    records : iterable of Protein or Skipped
        Skipped records pass through unchanged.
    where : str
        Named in the warning (e.g. the SOURCE).

    Yields
    ------
    Protein or Skipped
        A renamed protein is the same object, with its new ``id``.
    """
    used: set[str] = set()
    counts: dict[str, int] = {}
    warned = False
    for record in records:
        if isinstance(record, Protein):
            original = record.id
            if original in used:
                number = counts.get(original, 2)
                while f"{original}#{number}" in used:
                    number += 1
                counts[original] = number + 1
                record.meta.setdefault("original_id", original)
                record.id = f"{original}#{number}"
                if not warned:
                    warned = True
                    warnings.warn(
                        f"{where}: protein id {original!r} occurs more than once; every repeat is renamed with "
                        f"#2, #3, ... (first: {record.id!r})",
                        DuplicateIdWarning,
                        stacklevel=2,
                    )
            used.add(record.id)
        yield record
