"""A torchrun job whose rank 1 fails half-way (for test_scale_processes): rank 0 finishes its share and
waits at the final all-reduce, so only the launcher can end it."""

import sys

from plmlens.analysis import analyze
from plmlens.distributed import init_process_group
from plmlens.models import load_model
from plmlens.proteins import iter_records

group = init_process_group("cpu")
adapter = load_model(sys.argv[1], device="cpu")


def fail_on_rank_one(state) -> None:
    if group.rank == 1 and state.n_batches >= 2:
        raise RuntimeError("rank 1 fails on purpose")


analyze(adapter, iter_records(sys.argv[2]), ["contact"], n_bootstrap=0, max_tokens=200, progress=fail_on_rank_one,
        group=group)  # fmt: skip
