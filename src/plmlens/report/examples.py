"""Example proteins for the report's head explorer: some of a run's data through the run's model, once.

`examples_for_run` loads what an analyze run's ``summary.json`` names (its model, with the same random weights
where it ran with them, and its data); `collect_examples` runs the proteins through the model layer by layer
into an `ExampleCollector`, which keeps, for every head, the proteins where it has the most arcs above θ.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice

from plmlens.models import ModelAdapter, ModelLoadError, load_model
from plmlens.proteins import Protein, SourceError, iter_proteins
from plmlens.report.interactive import ExampleCollector, ExampleSet


class NoExamplesError(Exception):
    """Why a run gets no example proteins, in one line for the report page.

    Attributes
    ----------
    warning : str or None
        The model's load error whole (the reason keeps its first line), when the model could not be loaded.
    """

    def __init__(self, reason: str, warning: str | None = None) -> None:
        super().__init__(reason)
        self.warning = warning


def collect_examples(
    adapter: ModelAdapter,
    proteins: Sequence[Protein],
    theta: float,
    *,
    per_head: int = 3,
    min_arc_weight: float = 0.05,
    max_length: int = 512,
    batch_size: int = 4,
) -> ExampleSet:
    """For every head, its `per_head` proteins with the most arcs above `theta`.

    Parameters
    ----------
    adapter : ModelAdapter
    proteins : sequence of Protein
        The candidates, each run through the model once.
    theta : float
        The run's attention threshold θ.
    per_head : int
        Proteins offered per head.
    min_arc_weight : float
        Lightest arc kept (all heads, float16).
    max_length : int
        Token limit; a longer protein keeps its first residues.
    batch_size : int
        Proteins per forward pass.

    Returns
    -------
    ExampleSet
    """
    collector = ExampleCollector(adapter.n_layers, adapter.n_heads, theta, min_arc_weight)
    for start in range(0, len(proteins), batch_size):
        batch = proteins[start : start + batch_size]
        for output in adapter.iter_layers(batch, max_length=max_length, hidden_states=False):
            for b, protein in enumerate(batch):
                n = int(output.lengths[b])
                # Truncated proteins keep their first residues: the record is cut to match.
                seen = protein.first(n)
                # Keyed by position: ids may repeat in a source.
                collector.add(seen, output.layer, output.attention[b].numpy(), key=start + b)
    return collector.select(per_head)


def examples_for_run(
    summary: dict, *, candidates: int = 30, per_head: int = 3, min_arc_weight: float = 0.05, batch_size: int = 4
) -> ExampleSet:
    """Example proteins for the head explorer of an analyze run: up to `candidates` proteins of its data run
    through its model (`collect_examples`).

    Parameters
    ----------
    summary : dict
        The run's ``summary.json``: its ``model`` (name, ``random_init``, ``init_seed``), ``data``, ``threshold``
        and ``max_length``.
    candidates : int
        Proteins of the run's data run through the model.
    per_head, min_arc_weight, batch_size
        As in `collect_examples`.

    Returns
    -------
    ExampleSet

    Raises
    ------
    NoExamplesError
        The run names no data or model, the model cannot be loaded (e.g. offline), or the data cannot be read
        or holds no proteins.
    """
    data = summary.get("data")
    if not data:
        raise NoExamplesError("the run does not name its data")
    described = summary["model"]
    if not isinstance(described.get("name"), str):
        raise NoExamplesError("the run does not name its model")
    # A random-weights run is drawn with the weights it ran with: the same seed draws them again.
    random_init, init_seed = bool(described.get("random_init")), described.get("init_seed") or 0
    try:
        adapter = load_model(described["name"], random_init=random_init, seed=init_seed)
    except ModelLoadError as error:
        reason = f"the model {described['name']} could not be loaded ({str(error).splitlines()[0]})"
        raise NoExamplesError(reason, warning=str(error)) from None
    try:
        proteins = list(islice(iter_proteins(data), candidates))
    except (SourceError, OSError) as error:
        raise NoExamplesError(f"the run's data {data} could not be read ({error})") from None
    if not proteins:
        raise NoExamplesError(f"the run's data {data} has no proteins")
    return collect_examples(
        adapter, proteins, float(summary["threshold"]), per_head=per_head, min_arc_weight=min_arc_weight,
        max_length=int(summary.get("max_length") or 512), batch_size=batch_size,
    )  # fmt: skip


__all__ = ["NoExamplesError", "collect_examples", "examples_for_run"]
