"""Run `plmlens.probing.probe` on tiny deterministic inputs, alone or as one rank of a torchrun group.

``python tests/dist_probe_script.py MODEL_DIR OUT_DIR`` (also under ``torchrun``): writes a tiny random BERT to
MODEL_DIR with ``save_pretrained`` (every rank writes the same files to its own temporary name first, so ranks
never read a half-written model), probes synthetic proteins on it, and saves the result with
`ProbeResult.save`: rank 0 to OUT_DIR, every other rank to ``OUT_DIR/rank<r>`` (to check that they return the
same result). Used by ``tests/test_probing.py``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from plmlens.distributed import destroy_process_group, init_process_group
from plmlens.models import load_model
from plmlens.probing import probe
from plmlens.proteins import Protein
from scale_fixtures import tiny_bert  # the script's own directory is first on sys.path


def proteins(n: int = 12, seed: int = 0) -> list[Protein]:
    """Random-walk CA traces (3.8 Å steps, so contacts at every range), 30-50 residues, with DSSP and sites."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        length = int(rng.integers(30, 51))
        steps = rng.normal(size=(length, 3))
        ca = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
        sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), length))
        dssp = "".join(rng.choice(list("HEST-"), length))
        out.append(Protein(id=f"p{k}", sequence=sequence, ca=ca, cb=ca, dssp=dssp,
                           binding_site=rng.random(length) < 0.15))  # fmt: skip
    return out


def main(model_dir: Path, out_dir: Path) -> None:
    group = init_process_group("cpu")
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    if not model_dir.exists():
        staging = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".rank{group.rank}-"))
        tiny_bert(staging)
        try:
            staging.rename(model_dir)
        except OSError:  # another rank got there first with identical files
            shutil.rmtree(staging)
    adapter = load_model(model_dir, device="cpu", dtype="float32")
    result = probe(adapter, proteins(), train_fraction=0.5, seed=0, batch_size=2, max_train_pairs=600,
                   regression_proteins=4, group=group)  # fmt: skip
    result.save(out_dir if group.is_main else out_dir / f"rank{group.rank}")
    destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
