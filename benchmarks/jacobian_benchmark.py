"""Categorical-Jacobian throughput: proteins per minute on real antibody variable domains, on CPU or a GPU.

Run: ``python benchmarks/jacobian_benchmark.py [--model antiberty] [--proteins 4] [--device auto]
[--json out.json]``. Times `protein_jacobian_contacts` (20 × L substituted sequences per protein) after one
warm-up protein, at 200 substituted sequences per forward pass (10 positions) and at one position per pass
(20 sequences), and reports both rates and their ratio, measured in one run. On a GPU it also runs at 400
(the GPU default) and 2,000 sequences per pass, and in bfloat16. Reads the variable domains of the Pierce lab benchmark
antibodies from ``../shared/data/antibodies``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

# The antibody reader lives with the tests; the benchmark uses the same sequences.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models_fixtures import antibody_chains
from plmlens.causal import protein_jacobian_contacts
from plmlens.models import load_model


def rate(adapter, sequences: list[str], batch_size: int) -> dict:
    """Proteins per minute and residues per second of the Jacobian over `sequences` (after one warm-up)."""
    protein_jacobian_contacts(adapter, sequences[0][:40], batch_size=batch_size)
    if adapter.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for sequence in sequences:
        protein_jacobian_contacts(adapter, sequence, batch_size=batch_size)
    if adapter.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    residues = sum(len(s) for s in sequences)
    per_minute = 60 * len(sequences) / seconds
    return {"batch_size": batch_size, "proteins": len(sequences), "residues": residues, "seconds": seconds,
            "proteins_per_minute": per_minute, "residues_per_second": residues / seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="antiberty")
    parser.add_argument("--proteins", type=int, default=4, help="timed proteins per setting")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    # Sapiens heavy and Sapiens light read their own chain type only.
    chain_type = next((t for t in ("heavy", "light") if args.model.endswith(t)), None)
    chains = [c for c in antibody_chains(limit=2 * args.proteins + 2) if chain_type in (None, c.chain_type)]
    sequences = [c.sequence for c in chains][: args.proteins]
    runs = []
    adapter = load_model(args.model, device=args.device, dtype="float32", lm_head=True)
    settings = [200, 20] + ([400, 2000] if adapter.device.type == "cuda" else [])
    for batch_size in settings:
        runs.append({"dtype": "float32", **rate(adapter, sequences, batch_size)})
    if adapter.device.type == "cuda":
        adapter = load_model(args.model, device=args.device, dtype="bfloat16", lm_head=True)
        runs.append({"dtype": "bfloat16", **rate(adapter, sequences, 2000)})
    result = {
        "model": args.model, "device": str(adapter.device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "runs": runs,
        "batched_over_one_position": runs[0]["proteins_per_minute"] / runs[1]["proteins_per_minute"],
    }  # fmt: skip
    for run in runs:
        print(f"{args.model} {result['device']} {run['dtype']} batch {run['batch_size']}: "
              f"{run['proteins_per_minute']:.2f} proteins/min, {run['residues_per_second']:.1f} residues/s "
              f"({run['proteins']} proteins, {run['residues']} residues, {run['seconds']:.1f} s)")  # fmt: skip
    print(f"batched (200 per pass) / one position per pass: {result['batched_over_one_position']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
