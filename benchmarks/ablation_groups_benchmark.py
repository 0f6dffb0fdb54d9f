"""Head-ablation control groups: seconds per group, one by one and several per forward pass.

Run: ``python benchmarks/ablation_groups_benchmark.py [--model sapiens-heavy] [--proteins 20] [--groups 16]
[--device auto] [--json out.json]``. Ablates the same seeded random groups of five heads (three mask draws per
protein, no contact regression) with ``groups_per_pass`` 1, 4 and 8, after one warm-up group, and reports the
seconds per group and each setting's speed-up over one group per pass, measured in one run. Reads the
variable domains of the Pierce lab benchmark antibodies from ``../shared/data/antibodies``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The antibody reader lives with the tests; the benchmark uses the same sequences.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models_fixtures import antibody_chains
from plmlens.causal import Ablation, ablate, standard_ablations
from plmlens.models import load_model
from plmlens.proteins import Protein


def seconds_per_group(adapter, proteins: list[Protein], groups: list[Ablation], per_pass: int) -> float:
    """Mean seconds per control group of `ablate` at `per_pass` groups per forward pass."""
    result = ablate(adapter, proteins, ablations=[Ablation("baseline", "baseline"), *groups], groups_per_pass=per_pass,
                    regression_proteins=1, bootstrap=10, mask_draws=3)  # fmt: skip
    assert result.info["seconds_per_group"] is not None, "no control group ran"
    return float(result.info["seconds_per_group"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sapiens-heavy")
    parser.add_argument("--proteins", type=int, default=20)
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    adapter = load_model(args.model, device=args.device, dtype="float32", lm_head=True)
    chain = {"sapiens-heavy": "heavy", "sapiens-light": "light"}.get(args.model)
    chains = [c for c in antibody_chains() if chain is None or c.chain_type == chain][: args.proteins + 1]
    proteins = [Protein(c.id, c.sequence) for c in chains]
    groups = [a for a in standard_ablations(adapter.n_layers, adapter.n_heads, random_groups=args.groups)
              if a.kind == "random"]  # fmt: skip
    seconds_per_group(adapter, proteins, groups[:1], 1)  # warm-up
    timings = {per_pass: seconds_per_group(adapter, proteins, groups, per_pass) for per_pass in (1, 4, 8)}
    figures = {
        "model": adapter.name, "device": str(adapter.device), "proteins": len(proteins) - 1, "groups": len(groups),
        "seconds_per_group": timings, "speed_up": {k: timings[1] / v for k, v in timings.items()},
    }  # fmt: skip
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
