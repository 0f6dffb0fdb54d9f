"""What an SAE keeps of its layer: the model's own loss with the layer's output replaced by the reconstruction.

The model runs four ways on the same proteins and masks: intact; with the residues' states leaving the
layer replaced by the SAE's reconstruction; by zeros; by the training data's mean state. Special tokens and
padding are left as they are (the SAE never saw them). The loss is the masked-LM loss (mean negative
log-likelihood of the true residues, a seeded 15% of each protein's residues masked at once) of a masked model,
and the next-residue loss of a causal one. The loss recovered is how much of the gap between an ablation and
the intact model the reconstruction closes::

    recovered = (loss_ablated - loss_sae) / (loss_ablated - loss_intact)

1 means the reconstruction is as good as the layer itself; 0, no better than throwing the layer away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from plmlens.models import ModelAdapter
from plmlens.models.hooks import RESID_POST, hook_name
from plmlens.models.tokenizers import STANDARD_RESIDUES
from plmlens.proteins import Protein

#: Share of each protein's residues masked for the masked-LM loss.
MASK_FRACTION = 0.15
#: The ways the layer's output is replaced, beside the intact model.
REPLACEMENTS = ("sae", "zero", "mean")


def masked_positions(index: int, n: int, seed: int) -> np.ndarray:
    """The seeded mask of the `index`-th protein: `MASK_FRACTION` of its `n` residues, at least one."""
    rng = np.random.default_rng([seed, 23, index])
    return np.sort(rng.choice(n, size=max(1, round(MASK_FRACTION * n)), replace=False))


def _replacer(kind: str, sae: torch.nn.Module | None, mean: torch.Tensor | None, spans) -> Callable:
    def replace(hidden: torch.Tensor, point) -> torch.Tensor:
        out = hidden.clone()
        for b, (start, n) in enumerate(spans):
            states = hidden[b, start : start + n].float()
            if kind == "sae":
                new = sae(states)[0]
            elif kind == "zero":
                new = torch.zeros_like(states)
            else:
                new = mean.to(states.device).expand_as(states)
            out[b, start : start + n] = new.to(hidden.dtype)
        return out

    return replace


def _batch_loss(adapter: ModelAdapter, batch: list[Protein], first: int, seed: int, max_length: int,
                hook: tuple[str, Callable] | None) -> tuple[float, int]:  # fmt: skip
    """Summed NLL and residues scored of a batch (proteins `first`, `first` + 1, ...)."""
    columns = {c: k for k, c in enumerate(STANDARD_RESIDUES)}
    masks = None if adapter.causal else [masked_positions(first + b, len(p), seed) for b, p in enumerate(batch)]
    hooks = [hook] if hook is not None else []
    with adapter.attach_hooks(hooks), torch.no_grad():
        log_probs = adapter.residue_log_probs(batch, masked=masks, max_length=max_length)
    total, count = 0.0, 0
    for b, (protein, lp) in enumerate(zip(batch, log_probs, strict=True)):
        truth = np.array([columns.get(c, -1) for c in protein.sequence.upper()[: len(lp)]])
        scored = np.arange(len(lp)) if masks is None else masks[b]
        if adapter.causal and not adapter.tokenizer.prefix:
            scored = scored[scored > 0]
        scored = scored[truth[scored] >= 0]
        total += float(-lp[scored, truth[scored]].astype(np.float64).sum())
        count += len(scored)
    return total, count


def fidelity(
    adapter: ModelAdapter,
    sae: torch.nn.Module,
    proteins: Sequence[Protein],
    layer: int,
    *,
    mean: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int = 512,
) -> dict:
    """The model's loss intact, with `layer`'s output replaced by the SAE's reconstruction, by zeros and by
    `mean`, and the loss recovered against each ablation.

    Parameters
    ----------
    adapter : ModelAdapter
        Loaded with its language-model head.
    sae : torch.nn.Module
        ``sae(states)`` returns ``(reconstruction, latents)`` for raw states (n, d) on the model's device.
    proteins : sequence of Protein
        Held-out proteins (not the SAE's training data).
    layer : int
        1-based layer whose output (``blocks.{layer - 1}.resid_post``) is replaced.
    mean : ndarray, shape (d,), optional
        The mean state for the mean ablation (default: the mean over these proteins' states is not taken:
        the mean ablation is left out).
    seed : int
        Seeds the masks.

    Returns
    -------
    dict
        ``loss_intact``, ``loss_sae``, ``loss_zero``, ``loss_mean`` (None without `mean`),
        ``loss_recovered_zero``, ``loss_recovered_mean``, ``residues_scored``.
    """
    if adapter.lm_model is None:
        raise ValueError(f"{adapter.name} was loaded without its language-model head; the loss needs it")
    if not 1 <= layer <= adapter.n_layers:
        raise ValueError(f"{adapter.name} has layers 1..{adapter.n_layers}, not {layer}")
    cut = [p.first(min(max_length, adapter.max_length) - adapter.tokenizer.n_special) for p in proteins]
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=adapter.device) if mean is not None else None
    kinds = ["intact", "sae", "zero"] + (["mean"] if mean is not None else [])
    sums = dict.fromkeys(kinds, 0.0)
    scored = 0
    sae = sae.to(adapter.device).eval()
    name = hook_name(RESID_POST, layer - 1)
    for start in range(0, len(cut), batch_size):
        batch = cut[start : start + batch_size]
        encoding = adapter.encode(batch, max_length=max_length)
        spans = list(zip(encoding.starts.tolist(), encoding.lengths.tolist(), strict=True))
        for kind in kinds:
            hook = None if kind == "intact" else (name, _replacer(kind, sae, mean_t, spans))
            total, count = _batch_loss(adapter, batch, start, seed, max_length, hook)
            sums[kind] += total
        scored += count
    if scored == 0:
        raise ValueError("no residue could be scored (empty or non-standard sequences)")
    losses = {kind: sums[kind] / scored for kind in kinds}
    record = {f"loss_{kind}": losses.get(kind) for kind in ("intact", *REPLACEMENTS)}
    for kind in ("zero", "mean"):
        gap = losses[kind] - losses["intact"] if kind in losses else None
        record[f"loss_recovered_{kind}"] = (losses[kind] - losses["sae"]) / gap + 0.0 if gap else None
    record["residues_scored"] = scored
    return record
