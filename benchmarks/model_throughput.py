"""AntiBERTy forward throughput (residues per second) at batch sizes 1 and 8 on real antibody sequences.

Run: ``python benchmarks/model_throughput.py [--batches N]``. Reads the variable domains of the Pierce lab
benchmark antibodies from ``../shared/data/antibodies`` and times ``ModelAdapter.iter_layers`` (attention
and hidden states of every layer, residue-aligned), after one warm-up batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# The antibody reader lives with the tests; the benchmark uses the same sequences.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models_fixtures import antibody_chains
from plmlens.models import load_model


def throughput(model_name: str, batch_size: int, n_batches: int) -> tuple[float, int]:
    """Residues per second of full forward passes, and the residues timed."""
    adapter = load_model(model_name)
    sequences = [c.sequence for c in antibody_chains()]
    needed = batch_size * (n_batches + 1)
    sequences = (sequences * (needed // len(sequences) + 1))[:needed]
    batches = [sequences[i : i + batch_size] for i in range(0, needed, batch_size)]
    for _ in adapter.iter_layers(batches[0]):  # warm-up
        pass
    residues, start = 0, time.perf_counter()
    for batch in batches[1:]:
        for _ in adapter.iter_layers(batch):
            pass
        residues += sum(len(s) for s in batch)
    return residues / (time.perf_counter() - start), residues


def main() -> None:
    """Print residues per second for batch sizes 1 and 8."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="antiberty")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per batch size")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for batch_size in (1, 8):
        rate, residues = throughput(args.model, batch_size, args.batches)
        print(f"{args.model} batch {batch_size}: {rate:,.0f} residues/s ({residues} residues)")


if __name__ == "__main__":
    main()
