"""The sparse autoencoder (SAE): TopK (Gao et al. 2024), BatchTopK (Bussmann et al. 2024) or ReLU + L1.

A compact torch module written here rather than taken from dictionary-learning or SAELens, which pull in
nnsight / transformer-lens and much else for a few dozen lines of model.

Units: the SAE works in *scaled* units, ``x * input_scale``, where the trainer chooses ``input_scale`` so that
the training tokens' mean squared norm is 1 (so losses and learning rates mean the same at every model
width). `SparseAutoencoder.encode` takes raw hidden states and `SparseAutoencoder.decode` returns raw hidden
states; the scaling is internal. ``b_dec`` is in scaled units.

On disk (`save_sae` / `load_sae`): ``sae.safetensors`` (the tensors; never a pickle) and ``sae.json`` (format
``plmlens-sae/1``, the config and the caller's metadata). ``sae.json`` is written last, so its presence marks
a finished SAE (`plmlens.rundir.FeatureDir`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_tensors
from torch import nn

from plmlens.ioutils import write_bytes_atomic, write_text_atomic
from plmlens.rundir import SAE_RECORD, SAE_WEIGHTS

__all__ = ["ACTIVATIONS", "SAE_FORMAT", "SAEConfig", "SparseAutoencoder", "load_sae", "save_sae"]

SAE_FORMAT = "plmlens-sae/1"
ACTIVATIONS = ("topk", "batchtopk", "relu")
#: The tensors of an SAE on disk, with their shapes in terms of the config.
_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")


@dataclass(frozen=True)
class SAEConfig:
    """An SAE's shape and training objective.

    Parameters
    ----------
    d_in : int
        Width of the hidden states it reads.
    width : int
        Number of latents.
    k : int
        Active latents per token (TopK), or on average per token over a batch (BatchTopK). Unused by ReLU.
    activation : {"topk", "batchtopk", "relu"}
    l1_coeff : float
        ReLU only: the weight of the L1 penalty ``Σ_i |z_i|·‖W_dec[i]‖``. It is applied as
        ``l1_coeff / sqrt(d_in)`` on the scaled units (mean squared norm 1), which is the same objective as
        Anthropic's convention (April 2024 update: inputs scaled to mean squared norm ``d_in``, squared error
        summed over dimensions), where 5 is their default.
    aux_k : int or None
        Dead latents used by the AuxK loss (Gao et al. 2024); None means ``d_in // 2``, their choice.
    aux_coeff : float
        Weight of the AuxK loss (1/32 in Gao et al.).
    dead_tokens : int
        A latent is dead once it has not fired on this many training tokens. Gao et al. use 10 million on
        GPT-scale data; 200,000 (about 1,000 proteins of 200 residues) keeps the same meaning on the few
        million residues a protein SAE is trained on.
    input_scale : float
        Raw hidden states are multiplied by this before encoding (set by the trainer: 1/sqrt of the mean
        squared norm of the training tokens).
    threshold_momentum : float
        BatchTopK: weight of each training batch's smallest kept activation in the running estimate of the
        inference threshold (0.01 as in Bussmann et al.'s code).
    seed : int
        Seed of the initial weights.
    """

    d_in: int
    width: int
    k: int = 32
    activation: str = "topk"
    l1_coeff: float = 5.0
    aux_k: int | None = None
    aux_coeff: float = 1 / 32
    dead_tokens: int = 200_000
    input_scale: float = 1.0
    threshold_momentum: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        problem = _config_problem(self)
        if problem:
            raise ValueError(f"SAEConfig: {problem}")
        if self.aux_k is None:
            object.__setattr__(self, "aux_k", max(1, self.d_in // 2))

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: Any, source: str = "config") -> SAEConfig:
        """A config from `to_dict`'s output; `ValueError` (one line naming `source`) when it is not one."""
        if not isinstance(record, dict):
            raise ValueError(f"{source}: SAE config is not a record")
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(record) - names)
        if unknown:
            raise ValueError(f"{source}: SAE config has unknown fields {unknown}")
        missing = sorted({"d_in", "width"} - set(record))
        if missing:
            raise ValueError(f"{source}: SAE config lacks {missing}")
        try:
            return cls(**record)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _config_problem(config: SAEConfig) -> str | None:
    """What is wrong with a config (JSON may give any type anywhere), or None."""
    for name in ("d_in", "width", "k", "dead_tokens"):
        value = getattr(config, name)
        if not _is_int(value) or value < 1:
            return f"{name} must be a positive integer, not {value!r}"
    if not _is_int(config.seed) or config.seed < 0:
        return f"seed must be a nonnegative integer, not {config.seed!r}"
    if config.aux_k is not None and (not _is_int(config.aux_k) or config.aux_k < 1):
        return f"aux_k must be a positive integer, not {config.aux_k!r}"
    if config.activation not in ACTIVATIONS:
        return f"activation must be one of {list(ACTIVATIONS)}, not {config.activation!r}"
    if config.activation != "relu" and config.k > config.width:
        return f"k ({config.k}) exceeds width ({config.width})"
    for name in ("l1_coeff", "aux_coeff", "threshold_momentum"):
        value = getattr(config, name)
        if not _is_float(value) or value < 0:
            return f"{name} must be a nonnegative number, not {value!r}"
    if not _is_float(config.input_scale) or config.input_scale <= 0:
        return f"input_scale must be a positive number, not {config.input_scale!r}"
    if config.threshold_momentum > 1:
        return f"threshold_momentum must be at most 1, not {config.threshold_momentum!r}"
    return None


class SparseAutoencoder(nn.Module):
    """``z = act((x·s − b_dec) W_enc + b_enc)``, ``x̂ = (z W_dec + b_dec) / s`` with ``s = input_scale``.

    Parameters
    ----------
    config : SAEConfig

    Notes
    -----
    Initialisation: ``W_dec`` rows are random unit vectors (seeded by ``config.seed``), ``W_enc = W_dec.T``
    (tied), biases zero; the trainer then sets ``b_dec`` to the data mean. BatchTopK keeps the ``k × batch``
    largest activations of a batch in training mode and, in eval mode, those above ``threshold``, a running
    estimate of the smallest activation kept in training (a buffer, saved with the weights).
    """

    def __init__(self, config: SAEConfig) -> None:
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        W_dec = torch.randn(config.width, config.d_in, generator=generator)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(config.width))
        self.b_dec = nn.Parameter(torch.zeros(config.d_in))
        # Negative until the first training batch sets it.
        self.register_buffer("threshold", torch.tensor(-1.0))

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output before the sparsifying activation, from raw hidden states."""
        return (x * self.config.input_scale - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The sparse latents from pre-activations (``(..., width)``)."""
        config = self.config
        if config.activation == "relu":
            return torch.relu(pre)
        if config.activation == "topk" or (self.training and pre.ndim < 2):
            values, indices = pre.topk(config.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))
        if not self.training:  # batchtopk at inference: the learned threshold
            if float(self.threshold) < 0:
                raise ValueError("BatchTopK SAE has no inference threshold yet (it was never trained)")
            return pre * (pre > self.threshold)
        flat = torch.relu(pre).flatten(start_dim=-2)  # all tokens of the batch together
        n_keep = min(config.k * pre.shape[-2], flat.shape[-1])
        values, indices = flat.topk(n_keep, dim=-1)
        latents = torch.zeros_like(flat).scatter_(-1, indices, values).view_as(pre)
        self._update_threshold(values)
        return latents

    @torch.no_grad()
    def _update_threshold(self, kept: torch.Tensor) -> None:
        positive = kept[kept > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min()
        if float(self.threshold) < 0:
            self.threshold.copy_(smallest)
        else:
            beta = self.config.threshold_momentum
            self.threshold.mul_(1 - beta).add_(beta * smallest)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (dense, nonnegative, mostly zero) of raw hidden states ``(..., d_in)``."""
        return self.activate(self.pre_activations(x))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Reconstructed hidden states, in raw units."""
        return (latents @ self.W_dec + self.b_dec) / self.config.input_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat, latents)`` of raw hidden states."""
        latents = self.encode(x)
        return self.decode(latents), latents

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Scale each decoder row to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Remove from ``W_dec.grad`` the part along each decoder row, which would only change its norm
        (undone by `normalize_decoder_`) and, through Adam's normalisation, disturb the rest."""
        if self.W_dec.grad is None:
            return
        rows = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        parallel = (self.W_dec.grad * rows).sum(dim=1, keepdim=True)
        self.W_dec.grad -= parallel * rows

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors that define the SAE (weights and the BatchTopK threshold), detached, on the CPU."""
        return {name: getattr(self, name).detach().cpu().contiguous() for name in _TENSORS}

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        d, width = self.config.d_in, self.config.width
        return {"W_enc": (d, width), "b_enc": (width,), "W_dec": (width, d), "b_dec": (d,), "threshold": ()}

    @torch.no_grad()
    def load_tensors_(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Copy `tensors` (as from `tensors`) in; `ValueError` naming `source` on a missing or misshapen one."""
        for name, shape in self.expected_shapes().items():
            if name not in tensors:
                raise ValueError(f"{source}: tensor {name!r} missing")
            if tuple(tensors[name].shape) != shape:
                found = tuple(tensors[name].shape)
                raise ValueError(f"{source}: tensor {name!r} has shape {found}, the config says {shape}")
            getattr(self, name).copy_(tensors[name])


def save_sae(sae: SparseAutoencoder, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``sae.safetensors`` then ``sae.json`` (each atomically) into `directory`.

    Parameters
    ----------
    sae : SparseAutoencoder
    directory : path
        Created when missing.
    metadata : dict, optional
        JSON-ready extras (model, layer, training record ...), stored under ``"metadata"``.

    Returns
    -------
    Path
        The directory.
    """
    directory = Path(directory)
    write_bytes_atomic(directory / SAE_WEIGHTS, save_tensors(sae.tensors(), metadata={"format": SAE_FORMAT}))
    record = {"format": SAE_FORMAT, "config": sae.config.to_dict(), "metadata": dict(metadata or {})}
    write_text_atomic(directory / SAE_RECORD, json.dumps(record, indent=2, allow_nan=False) + "\n")
    return directory


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; `ValueError` naming it when it is missing or damaged."""
    if not path.is_file():
        raise ValueError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: damaged safetensors ({type(error).__name__}: {error})") from None


def read_record(path: Path, expected_format: str) -> dict[str, Any]:
    """A JSON record with ``"format": expected_format``; `ValueError` naming the file otherwise."""
    if not path.is_file():
        raise ValueError(f"{path}: missing")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: damaged ({type(error).__name__}: {error})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: damaged (not a record)")
    if record.get("format") != expected_format:
        raise ValueError(f"{path}: format {record.get('format')!r}, expected {expected_format!r}")
    return record


def load_sae(directory: str | Path, device: str | torch.device = "cpu") -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Read an SAE written by `save_sae`.

    Parameters
    ----------
    directory : path
    device : str or torch.device

    Returns
    -------
    (SparseAutoencoder, dict)
        The SAE in eval mode on `device`, and the metadata stored with it.

    Raises
    ------
    ValueError
        One line naming the file, when a file is missing or damaged or the tensors do not fit the config.
    """
    directory = Path(directory)
    record_path = directory / SAE_RECORD
    record = read_record(record_path, SAE_FORMAT)
    config = SAEConfig.from_dict(record.get("config"), str(record_path))
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{record_path}: damaged (metadata is not a record)")
    weights_path = directory / SAE_WEIGHTS
    sae = SparseAutoencoder(config)
    sae.load_tensors_(read_safetensors(weights_path), str(weights_path))
    return sae.to(device).eval(), metadata
