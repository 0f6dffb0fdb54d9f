"""``plmlens analyze`` under ``torchrun --nproc-per-node=2`` against one process, on this machine's CPU.

Both runs are the real command on the same proteins (gloo between the two ranks); the script reports the
wall time of each (model loading and reading the source included, as a user sees them), their ratio, and
checks that the two results are identical (counts exactly, floats to 1e-9 relative). There is no target:
on a 2-core machine the two ranks share the cores with each other and with the source reading, which every
rank does in full.

Run: ``python benchmarks/torchrun_benchmark.py [--model antiberty] [--data SOURCE] [--limit N] [--json F]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from plmlens.rundir import RunDir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed_run(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="antiberty")
    parser.add_argument("--data", default="promod3::min_length=100,max_length=300")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="plmlens-torchrun-"))
    common = ["analyze", "--model", args.model, "--data", args.data, "--limit", str(args.limit)]
    # One process uses both cores; each of two ranks gets one, so that they do not oversubscribe the machine.
    single_env = {**os.environ, "TQDM_DISABLE": "1"}
    ranks_env = {**single_env, "OMP_NUM_THREADS": "1"}
    single = timed_run([sys.executable, "-m", "plmlens", *common, "--out", str(work / "one")], single_env)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}"]
    double = timed_run([*launcher, "-m", "plmlens", *common, "--out", str(work / "two")], ranks_env)
    a, b = RunDir(work / "one").heads(), RunDir(work / "two").heads()
    pd.testing.assert_frame_equal(a[["n_arcs", "n_hits"]], b[["n_arcs", "n_hits"]])
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12)
    summary = RunDir(work / "one").summary()
    figures = {
        "proteins": summary["n_proteins"], "residues": summary["n_residues"], "cpu_cores": os.cpu_count(),
        "one_process_seconds": single, "torchrun_2_seconds": double, "speed_up": single / double, "identical": True,
    }  # fmt: skip
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
