"""Runs spread over processes: the shard of the proteins a process takes, and torch.distributed.

A process started by ``torchrun`` (directly, or by Slurm through ``srun torchrun``) finds ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment; `init_process_group` joins the group (NCCL between
GPUs, gloo on CPU) and returns a `ProcessGroup`, whose collectives move numpy arrays and JSON values (never
pickles) between ranks. Outside torchrun it is a group of one whose collectives return their input, so the
callers have one code path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Shard:
    """The proteins one process takes: those at positions ``k`` with ``k % count == index``.

    Positions count the proteins that pass the source's and the model's checks, in source order, so every
    process that reads the same source and model agrees on them.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= index < count")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/K"`` (0-based index ``i`` of ``K`` shards)."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"shard must be INDEX/COUNT, e.g. 0/4, not {text!r}") from None
        return cls(index, count)

    def within(self, inner: Shard) -> Shard:
        """`inner` applied to this shard's proteins (a torchrun rank inside a ``--shard`` job)."""
        return Shard(self.index + self.count * inner.index, self.count * inner.count)

    def takes(self, position: int) -> bool:
        return position % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (or another launcher setting WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


class ProcessGroup:
    """This process's place among the ranks of a run, and the collectives plmlens needs.

    Parameters
    ----------
    rank, world_size : int
        From torchrun's environment (0 and 1 for a single process).
    device : torch.device
        Where collective tensors live (the rank's GPU under NCCL, else CPU).
    """

    def __init__(self, rank: int = 0, world_size: int = 1, device: torch.device | None = None) -> None:
        self.rank = rank
        self.world_size = world_size
        self.device = device or torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)

    def __repr__(self) -> str:
        return f"ProcessGroup(rank {self.rank} of {self.world_size}, {self.device})"

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def all_reduce(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Element-wise sums over ranks, in float64 (exact for counts below 2**53)."""
        if not self.distributed:
            return arrays
        reduced = {}
        for name, value in arrays.items():
            tensor = torch.as_tensor(np.asarray(value, dtype=np.float64)).to(self.device)
            torch.distributed.all_reduce(tensor)
            reduced[name] = tensor.cpu().numpy()
        return reduced

    def all_gather_json(self, value: Any) -> list[Any]:
        """Every rank's JSON-serialisable `value`, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        return [json.loads(part.decode()) for part in self._all_gather_bytes(json.dumps(value).encode())]

    def gather_arrays(self, arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]] | None:
        """Every rank's named arrays, in rank order, on rank 0 (None elsewhere).

        The arrays travel as raw bytes with a JSON header of names, dtypes and shapes (numeric dtypes only).
        """
        if not self.distributed:
            _check_numeric(arrays)  # the same rule as between ranks, without the copy
            return [arrays]
        parts = self._all_gather_bytes(_pack_arrays(arrays))
        if not self.is_main:
            return None
        return [_unpack_arrays(part) for part in parts]

    def broadcast_arrays(self, arrays: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """Rank 0's named arrays on every rank (other ranks pass None)."""
        if not self.distributed:
            assert arrays is not None
            return arrays
        if self.is_main:
            assert arrays is not None
            data = _pack_arrays(arrays)
            size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        else:
            size = torch.zeros(1, dtype=torch.int64, device=self.device)
        torch.distributed.broadcast(size, src=0)
        if self.is_main:
            buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
        else:
            buffer = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        torch.distributed.broadcast(buffer, src=0)
        return arrays if self.is_main else _unpack_arrays(buffer.cpu().numpy().tobytes())

    def _all_gather_bytes(self, data: bytes) -> list[bytes]:
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        torch.distributed.all_gather(sizes, size)
        longest = max(int(s.item()) for s in sizes)
        buffer = torch.zeros(longest, dtype=torch.uint8)
        if data:
            buffer[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        buffer = buffer.to(self.device)
        gathered = [torch.empty_like(buffer) for _ in range(self.world_size)]
        torch.distributed.all_gather(gathered, buffer)
        return [g[: int(s.item())].cpu().numpy().tobytes() for g, s in zip(gathered, sizes, strict=True)]


def _check_numeric(arrays: dict[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise TypeError(f"array {name!r} has dtype {array.dtype}; only numbers travel between ranks")


def _pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """Named numeric arrays as bytes: a JSON header of names, dtypes and shapes, then the raw data."""
    _check_numeric(arrays)
    header = {name: (a.dtype.str, list(a.shape)) for name, a in arrays.items()}
    payload = json.dumps(header).encode()
    body = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())
    return len(payload).to_bytes(8, "little") + payload + body


def _unpack_arrays(data: bytes) -> dict[str, np.ndarray]:
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length].decode())
    offset = 8 + length
    arrays = {}
    for name, (dtype, shape) in header.items():
        count = int(np.prod(shape, dtype=np.int64))
        array = np.frombuffer(data, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)
        arrays[name] = array.copy()
        offset += array.nbytes
    return arrays


_GROUP: ProcessGroup | None = None


def init_process_group(device: torch.device | str | None = None, timeout_minutes: float = 120.0) -> ProcessGroup:
    """Join torchrun's process group (once per process), or a group of one outside torchrun.

    Parameters
    ----------
    device : torch.device or str, optional
        The model's device: a CUDA device selects NCCL (and is made this process's current device), else
        gloo is used.
    timeout_minutes : float
        How long a collective may wait for the slowest rank (ranks meet only at the end of a run, so this
        bounds the imbalance between shards). A rank that fails is ended by torchrun, with the others.

    Returns
    -------
    ProcessGroup
    """
    global _GROUP
    if _GROUP is not None:
        return _GROUP
    if not launched_by_torchrun():
        _GROUP = ProcessGroup()
        return _GROUP
    device = torch.device(device) if device is not None else torch.device("cpu")
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=timeout_minutes)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        torch.distributed.init_process_group(**kwargs)
    _GROUP = ProcessGroup(torch.distributed.get_rank(), torch.distributed.get_world_size(), device)
    return _GROUP


def destroy_process_group() -> None:
    """Leave the process group (at the end of a command)."""
    global _GROUP
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _GROUP = None
