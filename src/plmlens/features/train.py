"""Training and evaluating a `SparseAutoencoder` on per-residue hidden states, streamed from a `TokenSource`.

The trainer reads its source one block at a time (memory does not grow with the number of tokens), in an
order fixed by ``(seed, epoch)``: the blocks are shuffled, then the tokens within each block. The order is
therefore a function of the position in the stream, and a checkpoint (weights, Adam moments, dead-latent
counters and the step) resumes to exactly the tensors an uninterrupted run reaches (bit for bit on the CPU).

Objective (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): squared error on the scaled units
(inputs times ``input_scale``, chosen so that their mean squared norm is 1; the error is thus a fraction of
the inputs' energy) plus, for TopK / BatchTopK, ``aux_coeff`` times the AuxK loss: the residual
``x − x̂`` reconstructed from the ``aux_k`` largest pre-activations of the dead latents, as a fraction of the
residual's variance; for ReLU, the decoder-norm-weighted L1 penalty (see `SAEConfig.l1_coeff`). Adam
(betas 0.9, 0.999); the learning rate defaults to Gao et al.'s scaling ``2e-4 / sqrt(width / 2**14)``
(4e-4 at width 4096) and decays linearly to 0 over the last fifth of the steps (Anthropic, April 2024
update). Decoder rows are kept at unit norm, their gradients' parallel parts removed before each step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from plmlens.features.sae import SAEConfig, SparseAutoencoder, read_record, read_safetensors
from plmlens.ioutils import write_bytes_atomic, write_text_atomic

__all__ = [
    "CHECKPOINT_FORMAT",
    "ArrayTokens",
    "TokenSource",
    "TrainRecord",
    "TrainState",
    "TrainingInterrupted",
    "default_lr",
    "evaluate_sae",
    "input_statistics",
    "train_sae",
]

CHECKPOINT_FORMAT = "plmlens-sae-checkpoint/1"
CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_RECORD = "checkpoint.json"
#: Tokens per shuffled block: the trainer holds one block (and one batch) in memory.
BLOCK_TOKENS = 65_536
#: Tokens sampled to choose ``input_scale`` and the initial ``b_dec``.
STATISTICS_TOKENS = 100_000
#: Training batches whose losses the `TrainRecord` reports.
RECORD_WINDOW = 16
#: Fraction of the steps over which the learning rate decays linearly to 0.
DECAY_FRACTION = 0.2
_PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec")


@runtime_checkable
class TokenSource(Protocol):
    """Per-residue hidden states, ``n_tokens × d``, readable a block at a time."""

    n_tokens: int
    d: int

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``start:stop`` as float32 ``(stop - start, d)``."""
        ...


class ArrayTokens:
    """A `TokenSource` over an array in memory (or a ``np.memmap``).

    Parameters
    ----------
    array : array-like, shape (n_tokens, d)
    """

    def __init__(self, array: np.ndarray) -> None:
        if getattr(array, "ndim", None) != 2:
            raise ValueError(f"ArrayTokens: expected a 2-d array (tokens × d), got shape {np.shape(array)}")
        self.array = array
        self.n_tokens, self.d = (int(n) for n in array.shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop], dtype=np.float32)


class TrainingInterrupted(RuntimeError):  # noqa: N818 (the name the callers use)
    """Training stopped by SIGTERM/SIGINT after its checkpoint was saved."""


@dataclass
class TrainState:
    """Progress of a training run, given to the ``progress`` callback."""

    step: int
    n_steps: int
    tokens_seen: int
    loss: float
    mse: float
    aux_loss: float
    tokens_per_second: float
    n_dead: int


@dataclass
class TrainRecord:
    """What a training run did; ``to_dict`` is JSON-ready.

    ``mse``, ``aux_loss``, ``l1``, ``loss`` and ``fraction_variance_explained`` are over the last (up to 16)
    training batches, in scaled units (FVE is the same in raw units). ``seconds`` adds up all sessions of a
    resumed run; ``completed`` is False when it stopped at ``max_steps``.
    """

    tokens_seen: int
    steps: int
    n_steps: int
    epochs: float
    seconds: float
    tokens_per_second: float
    mse: float
    aux_loss: float
    l1: float
    loss: float
    fraction_variance_explained: float
    n_dead: int
    lr: float
    batch_size: int
    seed: int
    completed: bool
    resumed_from_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_lr(width: int) -> float:
    """Gao et al.'s learning rate for `width` latents: ``2e-4 / sqrt(width / 2**14)``."""
    return 2e-4 / math.sqrt(width / 2**14)


# -- the data ------------------------------------------------------------------------------------------------


def _read(tokens: TokenSource, start: int, stop: int) -> np.ndarray:
    """A block of the source, checked: float32, the right shape, finite."""
    block = np.asarray(tokens.read(start, stop), dtype=np.float32)
    if block.shape != (stop - start, tokens.d):
        expected = (stop - start, tokens.d)
        raise ValueError(f"token source: read({start}, {stop}) gave shape {block.shape}, not {expected}")
    if not np.isfinite(block).all():
        raise ValueError(f"token source: tokens {start}:{stop} hold NaN or infinite values")
    return block


def input_statistics(
    tokens: TokenSource, *, seed: int = 0, max_tokens: int = STATISTICS_TOKENS, chunk: int = 1024
) -> tuple[float, np.ndarray]:
    """Mean squared norm and mean of (a seeded sample of) the tokens, in float64.

    All tokens when there are at most `max_tokens`; else `max_tokens // chunk` chunks of `chunk` consecutive
    tokens at seeded random places (without replacement), read one at a time.

    Returns
    -------
    (float, ndarray)
        Mean squared norm, and the mean ``(d,)``.
    """
    n = tokens.n_tokens
    if n < 1:
        raise ValueError("token source is empty")
    if n <= max_tokens:
        starts = np.arange(0, n, chunk)
    else:
        n_chunks = max(1, max_tokens // chunk)
        rng = np.random.default_rng([seed, 2])
        starts = np.sort(rng.choice(n // chunk, size=min(n_chunks, n // chunk), replace=False)) * chunk
    total, squared, count = np.zeros(tokens.d), 0.0, 0
    for start in starts:
        block = _read(tokens, int(start), int(min(start + chunk, n))).astype(np.float64)
        total += block.sum(0)
        squared += float(np.einsum("ij,ij->", block, block))
        count += len(block)
    return squared / count, total / count


def _block_order(n_tokens: int, block_tokens: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0]).permutation(-(-n_tokens // block_tokens))


def _token_stream(tokens: TokenSource, seed: int, block_tokens: int, position: int) -> Iterator[np.ndarray]:
    """Pieces of the endless training stream from token `position` on: epochs of shuffled blocks, each
    shuffled within; a function of (seed, epoch) only, so any position can be resumed."""
    n = tokens.n_tokens
    epoch, offset = divmod(position, n)
    while True:
        done = 0  # tokens of this epoch before the current block
        for block_index in _block_order(n, block_tokens, seed, epoch):
            lo, hi = int(block_index) * block_tokens, min(n, (int(block_index) + 1) * block_tokens)
            if done + hi - lo <= offset:
                done += hi - lo
                continue
            order = np.random.default_rng([seed, epoch, 1, int(block_index)]).permutation(hi - lo)
            block = _read(tokens, lo, hi)[order]
            yield block[max(0, offset - done) :]
            done += hi - lo
        epoch, offset = epoch + 1, 0


def _batches(pieces: Iterator[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive `batch_size`-token batches cut from a stream of pieces."""
    held: list[np.ndarray] = []
    count = 0
    for piece in pieces:
        while len(piece):
            take = piece[: batch_size - count]
            held.append(take)
            count += len(take)
            piece = piece[len(take) :]
            if count == batch_size:
                yield np.concatenate(held) if len(held) > 1 else held[0]
                held, count = [], 0


# -- one step ------------------------------------------------------------------------------------------------


def _losses(sae: SparseAutoencoder, x: torch.Tensor, dead: torch.Tensor) -> dict[str, torch.Tensor]:
    """The training losses of a raw batch ``x`` and, detached, the sums the record needs."""
    config = sae.config
    pre = sae.pre_activations(x)
    latents = sae.activate(pre)
    x_hat = latents @ sae.W_dec + sae.b_dec  # scaled units
    scaled = x * config.input_scale
    residual = scaled - x_hat
    error = residual.pow(2).sum(-1)
    out = {"mse": error.mean(), "latents": latents, "error_sum": error.detach().sum()}
    out["variance_sum"] = (scaled - scaled.mean(0)).pow(2).sum().detach()
    zero = x.new_zeros(())
    out["aux"], out["l1"] = zero, zero
    if config.activation == "relu":
        out["l1"] = (latents * sae.W_dec.norm(dim=1)).sum(-1).mean()
        out["loss"] = out["mse"] + config.l1_coeff / math.sqrt(config.d_in) * out["l1"]
        return out
    n_dead = int(dead.sum())
    if n_dead and config.aux_coeff > 0:
        values, indices = pre.masked_fill(~dead, -torch.inf).topk(min(config.aux_k, n_dead), dim=-1)
        aux_latents = torch.zeros_like(pre).scatter_(-1, indices, torch.relu(values))
        target = residual.detach()
        aux_error = (aux_latents @ sae.W_dec - target).pow(2).sum()
        out["aux"] = aux_error / (target - target.mean(0)).pow(2).sum().clamp_min(1e-12)
    out["loss"] = out["mse"] + config.aux_coeff * out["aux"]
    return out


def _lr_at(step: int, n_steps: int, lr: float) -> float:
    """Constant, then linear decay to 0 over the last `DECAY_FRACTION` of the steps."""
    decay_steps = max(1, int(n_steps * DECAY_FRACTION))
    return lr * min(1.0, (n_steps - step) / decay_steps)


# -- checkpoints ---------------------------------------------------------------------------------------------


def _settings(config: SAEConfig, tokens: TokenSource, **training: Any) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (``input_scale`` is derived from the data)."""
    config_fields = {k: v for k, v in config.to_dict().items() if k != "input_scale"}
    return {"config": config_fields, "n_tokens": tokens.n_tokens, "d": tokens.d, **training}


def _save_checkpoint(directory: Path, sae, optimizer, dead_counter, state: dict[str, Any]) -> None:
    """Tensors then record, each atomically; the record names the step the tensors hold."""
    tensors = {f"sae.{name}": tensor for name, tensor in sae.tensors().items()}
    tensors["tokens_since_fired"] = dead_counter.detach().cpu()
    for name, parameter in zip(_PARAMETERS, _parameters(sae), strict=True):
        for key, value in optimizer.state.get(parameter, {}).items():
            tensors[f"adam.{name}.{key}"] = value.detach().cpu().contiguous().clone()
    step = str(state["step"])
    write_bytes_atomic(directory / CHECKPOINT_TENSORS, save_tensors(tensors, metadata={"step": step}))
    record = {"format": CHECKPOINT_FORMAT, **state}
    write_text_atomic(directory / CHECKPOINT_RECORD, json.dumps(record, indent=2, allow_nan=False) + "\n")


def _load_checkpoint(directory: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The record and tensors of a checkpoint, after checking it was made with `settings`."""
    record_path = directory / CHECKPOINT_RECORD
    record = read_record(record_path, CHECKPOINT_FORMAT)
    saved = record.get("settings")
    if not isinstance(saved, dict):
        raise ValueError(f"{record_path}: damaged (no settings)")
    differ = sorted(key for key in settings.keys() | saved.keys() if settings.get(key) != saved.get(key))
    if "config" in differ:
        differ.remove("config")
        mine, theirs = settings["config"], saved.get("config") or {}
        differ += [f"config.{key}" for key in sorted(mine.keys() | theirs.keys()) if mine.get(key) != theirs.get(key)]
    if differ:
        raise ValueError(f"{record_path}: made with different settings ({', '.join(differ)}); cannot resume")
    step = record.get("step")
    if not isinstance(step, int) or not isinstance(record.get("input_scale"), float):
        raise ValueError(f"{record_path}: damaged (step or input_scale missing)")
    tensors_path = directory / CHECKPOINT_TENSORS
    tensors = read_safetensors(tensors_path)
    with safe_open(str(tensors_path), framework="pt") as handle:
        saved_step = (handle.metadata() or {}).get("step")
    if saved_step != str(step):  # a crash between the two atomic writes
        raise ValueError(f"{tensors_path}: holds step {saved_step}, {CHECKPOINT_RECORD} says {step}; cannot resume")
    return record, tensors


def _restore(sae, optimizer, tensors: dict[str, torch.Tensor], directory: Path) -> torch.Tensor:
    """Load checkpoint tensors into `sae` and `optimizer`; the dead-latent counter."""
    source = str(directory / CHECKPOINT_TENSORS)
    sae.load_tensors_({name[4:]: t for name, t in tensors.items() if name.startswith("sae.")}, source)
    state = optimizer.state_dict()
    for index, name in enumerate(_PARAMETERS):
        moments = {key: tensors.get(f"adam.{name}.{key}") for key in ("step", "exp_avg", "exp_avg_sq")}
        if any(value is None for value in moments.values()):
            raise ValueError(f"{source}: Adam state of {name} missing")
        state["state"][index] = moments
    optimizer.load_state_dict(state)
    counter = tensors.get("tokens_since_fired")
    if counter is None or tuple(counter.shape) != (sae.config.width,):
        raise ValueError(f"{source}: tokens_since_fired missing or misshapen")
    return counter.to(sae.device)


def _parameters(sae: SparseAutoencoder) -> list[torch.nn.Parameter]:
    return [getattr(sae, name) for name in _PARAMETERS]


class _Signals:
    """SIGTERM/SIGINT noted instead of acted on, while training with a checkpoint (main thread only)."""

    def __init__(self, active: bool) -> None:
        self.active = active and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if self.active:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# -- training ------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """The mutable state of a training run."""

    sae: SparseAutoencoder
    optimizer: torch.optim.Adam
    dead_counter: torch.Tensor
    step: int
    n_steps: int
    seconds_before: float
    recent: list[dict[str, float]]
    resumed_from_step: int | None


def _start(
    tokens: TokenSource, config: SAEConfig, settings: dict[str, Any], checkpoint: Path | None, resume: bool, device
) -> _Run:
    """A fresh run (normalised on the data) or the one saved in `checkpoint`."""
    n_steps = settings["n_steps"]
    if resume and checkpoint is not None and (checkpoint / CHECKPOINT_RECORD).exists():
        record, tensors = _load_checkpoint(checkpoint, settings)
        sae = SparseAutoencoder(dataclasses.replace(config, input_scale=record["input_scale"])).to(device)
        optimizer = torch.optim.Adam(_parameters(sae), lr=settings["lr"], betas=(0.9, 0.999))
        counter = _restore(sae, optimizer, tensors, checkpoint)
        recent = record.get("recent") if isinstance(record.get("recent"), list) else []
        return _Run(sae, optimizer, counter, record["step"], n_steps, float(record.get("seconds", 0.0)), recent,
                    record["step"])  # fmt: skip
    msn, mean = input_statistics(tokens, seed=settings["seed"])
    if msn <= 0:
        raise ValueError("token source: all sampled tokens are zero; cannot normalise")
    scale = 1.0 / math.sqrt(msn)
    sae = SparseAutoencoder(dataclasses.replace(config, input_scale=scale)).to(device)
    with torch.no_grad():
        sae.b_dec.copy_(torch.as_tensor(mean * scale, dtype=torch.float32))
    optimizer = torch.optim.Adam(_parameters(sae), lr=settings["lr"], betas=(0.9, 0.999))
    counter = torch.zeros(config.width, dtype=torch.int64, device=device)
    return _Run(sae, optimizer, counter, 0, n_steps, 0.0, [], None)


def _train_step(run: _Run, x: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
    sae = run.sae
    out = _losses(sae, x, run.dead_counter >= sae.config.dead_tokens)
    run.optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    sae.remove_parallel_grad_()
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.step()
    sae.normalize_decoder_()
    fired = (out["latents"] > 0).any(0)
    run.dead_counter = torch.where(fired, 0, run.dead_counter + len(x))
    run.step += 1
    return out


def _summary(out: dict[str, torch.Tensor]) -> dict[str, float]:
    names = ("loss", "mse", "aux", "l1", "error_sum", "variance_sum")
    return {name: float(out[name].detach()) for name in names}


def _record(run: _Run, settings: dict[str, Any], seconds: float, tokens: TokenSource) -> TrainRecord:
    recent = run.recent
    names = ("loss", "mse", "aux", "l1")
    mean = {name: float(np.mean([r[name] for r in recent])) if recent else math.nan for name in names}
    variance = sum(r["variance_sum"] for r in recent)
    fve = 1 - sum(r["error_sum"] for r in recent) / variance if variance > 0 else math.nan
    tokens_seen = run.step * settings["batch_size"]
    return TrainRecord(
        tokens_seen=tokens_seen, steps=run.step, n_steps=run.n_steps, epochs=tokens_seen / tokens.n_tokens,
        seconds=seconds, tokens_per_second=tokens_seen / seconds if seconds > 0 else math.nan,
        mse=mean["mse"], aux_loss=mean["aux"], l1=mean["l1"], loss=mean["loss"], fraction_variance_explained=fve,
        n_dead=int((run.dead_counter >= run.sae.config.dead_tokens).sum()), lr=settings["lr"],
        batch_size=settings["batch_size"], seed=settings["seed"], completed=run.step >= run.n_steps,
        resumed_from_step=run.resumed_from_step,
    )  # fmt: skip


def _checkpoint_state(run: _Run, settings: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        "step": run.step, "n_steps": run.n_steps, "tokens_seen": run.step * settings["batch_size"],
        "epoch": run.step * settings["batch_size"] // settings["n_tokens"], "seed": settings["seed"],
        "input_scale": run.sae.config.input_scale, "config": run.sae.config.to_dict(), "seconds": seconds,
        "recent": run.recent, "settings": settings,
    }  # fmt: skip


def train_sae(
    tokens: TokenSource,
    config: SAEConfig,
    *,
    n_tokens_total: int | None = None,
    epochs: float = 1.0,
    batch_size: int = 4096,
    lr: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 60.0,
    resume: bool = False,
    progress: Callable[[TrainState], None] | None = None,
    progress_every: int = 10,
    max_steps: int | None = None,
    block_tokens: int = BLOCK_TOKENS,
) -> tuple[SparseAutoencoder, TrainRecord]:
    """Train an SAE on `tokens`, reading one block at a time.

    Parameters
    ----------
    tokens : TokenSource
    config : SAEConfig
        Its ``input_scale`` is replaced by the one the data gives (1/sqrt of the mean squared norm of a
        seeded sample of up to 100,000 tokens); ``b_dec`` starts at the sample's mean.
    n_tokens_total : int, optional
        Training tokens to see (rounded down to whole batches, at least one); default `epochs` passes.
    epochs : float
        Passes over the source when `n_tokens_total` is not given.
    batch_size : int
    lr : float, optional
        Adam's learning rate; default `default_lr` (Gao et al.'s scaling with the width).
    seed : int
        Seeds the token order (the weights' seed is ``config.seed``).
    device : str or torch.device
    checkpoint : path, optional
        A directory for the checkpoint, written every `checkpoint_seconds`, at the end, at `max_steps` and on
        SIGTERM/SIGINT (which then raise `TrainingInterrupted`).
    resume : bool
        Continue from `checkpoint` when it holds one (else start afresh); a checkpoint made with another
        config, seed, source size, batch size, learning rate or length is refused (`ValueError`). Without
        `resume`, an existing checkpoint is overwritten.
    progress : callable, optional
        Called with a `TrainState` every `progress_every` steps and after the last.
    max_steps : int, optional
        Stop once this many steps (in all sessions) are done, checkpointing; ``record.completed`` tells.
    block_tokens : int
        Tokens per shuffled block (the memory held beside the batch).

    Returns
    -------
    (SparseAutoencoder, TrainRecord)
        The SAE, in eval mode, on `device`.
    """
    if tokens.d != config.d_in:
        raise ValueError(f"token source has d={tokens.d}, SAE config d_in={config.d_in}")
    if tokens.n_tokens < 1 or batch_size < 1 or block_tokens < 1:
        raise ValueError("train_sae: need at least one token, and positive batch_size and block_tokens")
    total = n_tokens_total if n_tokens_total is not None else round(epochs * tokens.n_tokens)
    lr = default_lr(config.width) if lr is None else lr
    if not lr > 0:
        raise ValueError(f"train_sae: lr must be positive, not {lr!r}")
    settings = _settings(config, tokens, seed=seed, batch_size=batch_size, lr=lr,
                         n_steps=max(1, total // batch_size), block_tokens=block_tokens)  # fmt: skip
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    run = _start(tokens, config, settings, checkpoint, resume, device)
    run.sae.train()
    stop_at = run.n_steps if max_steps is None else min(run.n_steps, max_steps)
    started = last_saved = time.monotonic()
    start_step = run.step
    stream = _batches(_token_stream(tokens, seed, block_tokens, run.step * batch_size), batch_size)

    def elapsed() -> float:
        return run.seconds_before + time.monotonic() - started

    def save(seconds: float) -> None:
        state = _checkpoint_state(run, settings, seconds)
        _save_checkpoint(checkpoint, run.sae, run.optimizer, run.dead_counter, state)

    with _Signals(checkpoint is not None) as signals:
        while run.step < stop_at:
            x = torch.from_numpy(next(stream)).to(device)
            out = _train_step(run, x, _lr_at(run.step, run.n_steps, settings["lr"]))
            if run.step > run.n_steps - RECORD_WINDOW:
                run.recent = [*run.recent, _summary(out)][-RECORD_WINDOW:]
            if progress is not None and (run.step % progress_every == 0 or run.step == stop_at):
                rate = (run.step - start_step) * batch_size / max(time.monotonic() - started, 1e-9)
                n_dead = int((run.dead_counter >= config.dead_tokens).sum())
                progress(TrainState(run.step, run.n_steps, run.step * batch_size, float(out["loss"].detach()),
                                    float(out["mse"].detach()), float(out["aux"].detach()), rate, n_dead))  # fmt: skip
            if checkpoint is not None and signals.received is not None:
                save(elapsed())
                name = signal.Signals(signals.received).name
                raise TrainingInterrupted(f"{name} at step {run.step}; checkpoint saved in {checkpoint}")
            if checkpoint is not None and time.monotonic() - last_saved >= checkpoint_seconds:
                save(elapsed())
                last_saved = time.monotonic()
    seconds = elapsed()
    if checkpoint is not None:
        save(seconds)
    return run.sae.eval(), _record(run, settings, seconds, tokens)


# -- evaluation ----------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_sae(
    sae: SparseAutoencoder, tokens: TokenSource, *, batch_size: int = 4096, dense_threshold: float = 0.1
) -> dict[str, Any]:
    """How well `sae` (in eval mode) reconstructs `tokens`, streamed in order.

    Parameters
    ----------
    sae : SparseAutoencoder
    tokens : TokenSource
    batch_size : int
    dense_threshold : float
        A latent firing on more than this fraction of the tokens is dense.

    Returns
    -------
    dict
        ``n_tokens``; ``fraction_variance_explained`` ``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²`` (raw units); ``mse``
        (mean ``‖x − x̂‖²`` per token, raw units); ``mean_l0`` (active latents per token); ``n_dead`` (latents
        never firing), ``n_dense`` (firing on more than `dense_threshold` of the tokens), ``dense_threshold``;
        ``frequency`` (ndarray ``(width,)``: fraction of tokens each latent fires on; not JSON-ready).
    """
    if tokens.d != sae.config.d_in:
        raise ValueError(f"token source has d={tokens.d}, SAE d_in={sae.config.d_in}")
    if tokens.n_tokens < 1:
        raise ValueError("token source is empty")
    was_training = sae.training
    sae.eval()
    device = sae.device
    fires = torch.zeros(sae.config.width, dtype=torch.int64, device=device)
    error, active = torch.zeros((), dtype=torch.float64, device=device), 0
    mean, m2, count = torch.zeros(tokens.d, dtype=torch.float64, device=device), torch.zeros_like(error), 0
    for start in range(0, tokens.n_tokens, batch_size):
        stop = min(start + batch_size, tokens.n_tokens)
        x = torch.from_numpy(_read(tokens, start, stop)).to(device)
        x_hat, latents = sae(x)
        error += (x - x_hat).double().pow(2).sum()
        on = latents > 0
        fires += on.sum(0)
        active += int(on.sum())
        # Chan et al.'s merge of per-batch means and sums of squares: stable with large means.
        x64 = x.double()
        batch_mean = x64.mean(0)
        delta = batch_mean - mean
        m2 += (x64 - batch_mean).pow(2).sum() + delta.pow(2).sum() * count * len(x) / (count + len(x))
        mean += delta * len(x) / (count + len(x))
        count += len(x)
    sae.train(was_training)
    frequency = (fires.double() / count).cpu().numpy()
    variance = float(m2)
    return {
        "n_tokens": count,
        "fraction_variance_explained": 1 - float(error) / variance if variance > 0 else math.nan,
        "mse": float(error) / count,
        "mean_l0": active / count,
        "n_dead": int((frequency == 0).sum()),
        "n_dense": int((frequency > dense_threshold).sum()),
        "dense_threshold": dense_threshold,
        "frequency": frequency,
    }
