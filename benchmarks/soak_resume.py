"""Soak test of exact resume: kill a real ``plmlens analyze`` run again and again, resume it each time, and
check that the final result is identical to an uninterrupted run.

Each round starts ``plmlens analyze ... --resume --checkpoint-seconds S``, waits until that process has
written a checkpoint of its own, waits a random moment more, and sends SIGKILL (``kill -9``: at most the
last interval is lost), SIGTERM (what Slurm sends before preemption: the run saves and exits 143) or SIGINT
(saves, exits 130), chosen at random. After ``--kills`` interruptions the run is let finish, and its
``heads.csv`` is compared with an uninterrupted run's: counts exactly, floats to 1e-9 relative.

Run: ``python benchmarks/soak_resume.py [--kills 20] [--model antiberty] [--data SOURCE] [--limit N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from plmlens.rundir import RunDir

SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


def checkpoint_inodes(directory: Path) -> dict[Path, int]:
    """Checkpoint files and their inodes: each atomic write makes a new inode."""
    found = {}
    for path in directory.glob("checkpoint*.npz") if directory.exists() else ():
        try:
            found[path] = path.stat().st_ino
        except FileNotFoundError:
            continue
    return found


def wait_for_own_checkpoint(directory: Path, before: dict[Path, int], process: subprocess.Popen) -> bool:
    """True once `process` has written a checkpoint, False if it ended first."""
    while process.poll() is None:
        now = checkpoint_inodes(directory)
        if now and any(before.get(path) != inode for path, inode in now.items()):
            return True
        time.sleep(0.02)
    return False


def compare(reference: Path, resumed: Path) -> dict:
    """Counts equal, floats within 1e-9 relative; raises AssertionError otherwise."""
    runs = RunDir(reference), RunDir(resumed)
    a, b = (run.heads() for run in runs)
    pd.testing.assert_frame_equal(a[["property", "layer", "head", "n_arcs", "n_hits"]],
                                  b[["property", "layer", "head", "n_arcs", "n_hits"]])  # fmt: skip
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12)
    sa, sb = (run.summary() for run in runs)
    for key in ("n_proteins", "n_residues", "n_skipped", "backgrounds"):
        assert sa[key] == sb[key], key
    return {"rows": len(a), "n_arcs": int(a.n_arcs.sum()), "n_proteins": sa["n_proteins"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="interruptions before the run may finish")
    parser.add_argument("--model", default="antiberty")
    parser.add_argument("--data", default="promod3::min_length=60,max_length=200")
    parser.add_argument("--limit", type=int, default=800)
    parser.add_argument("--max-tokens", type=int, default=1024, help="small batches: many safe points")
    parser.add_argument("--checkpoint-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    work = Path(tempfile.mkdtemp(prefix="plmlens-soak-"))
    common = ["--model", args.model, "--data", args.data, "--limit", str(args.limit),
              "--max-tokens", str(args.max_tokens), "--properties", "default,contact_ranges"]  # fmt: skip
    plmlens = [sys.executable, "-m", "plmlens", "analyze"]

    started = time.perf_counter()
    reference = work / "reference"
    subprocess.run([*plmlens, *common, "--out", str(reference)], check=True, env=env, capture_output=True)
    reference_seconds = time.perf_counter() - started
    print(f"uninterrupted run: {reference_seconds:.1f} s", flush=True)

    out = work / "resumed"
    command = [*plmlens, *common, "--out", str(out), "--resume", "--checkpoint-seconds", str(args.checkpoint_seconds)]
    rounds = []
    while sum(r["interrupted"] for r in rounds) < args.kills:
        name = rng.choice(list(SIGNALS))
        before = checkpoint_inodes(out)
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # fmt: skip
        delay = None
        if wait_for_own_checkpoint(out, before, process):
            delay = rng.uniform(0.0, 1.5)
            time.sleep(delay)
            if process.poll() is None:
                os.killpg(process.pid, SIGNALS[name]) if name == "SIGKILL" else process.send_signal(SIGNALS[name])
        _, stderr = process.communicate()
        code = process.returncode
        interrupted = code != 0
        if interrupted and code != -signal.SIGKILL and code != 128 + SIGNALS[name]:
            raise SystemExit(f"round {len(rounds) + 1}: {name} gave exit code {code}:\n{stderr[-2000:]}")
        if not interrupted:
            raise SystemExit(f"the run finished after {len(rounds)} rounds, before {args.kills} interruptions: "
                             f"use more proteins (--limit) or a shorter --checkpoint-seconds")  # fmt: skip
        rounds.append({"signal": name, "delay": delay, "exit_code": code, "interrupted": interrupted})
        print(f"round {len(rounds):2d}: {name:<7} after {delay or 0:.2f} s -> exit {code}", flush=True)
    final = subprocess.run(command, env=env, capture_output=True, text=True)
    if final.returncode != 0:
        raise SystemExit(f"the final resume failed:\n{final.stderr[-2000:]}")
    figures = compare(reference, out)
    total = time.perf_counter() - started
    print(f"identical after {len(rounds)} interruptions: {figures} ({total:.0f} s in all)")
    if args.json:
        record = {"rounds": rounds, "identical": True, **figures, "reference_seconds": reference_seconds,
                  "total_seconds": total}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
