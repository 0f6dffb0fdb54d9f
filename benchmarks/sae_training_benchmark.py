"""Speed and memory of `plmlens.features.train.train_sae`, on random Gaussian-ish tokens shaped like AntiBERTy's.

Two figures:

1. **Throughput** -- training tokens per second of a TopK SAE of AntiBERTy's shape (d=512, width 4096, k=32,
   batch 4096) for about `--seconds` seconds, on the CPU and on CUDA when available. The normalisation pass
   and the first step (warm-up) are left out of the rate.
2. **Memory** -- peak resident memory (``VmHWM``) of one epoch of training over a memory-mapped float16
   token file of 200k and of 1M tokens (d=512; a small SAE, width 128, so that the epoch is quick: the
   memory in question is the data's), each in a fresh process. The trainer reads one 65,536-token block at
   a time, so the peak must not grow with the file. Pages of a memory-mapped file that were read count in
   RSS until the kernel reclaims them, so the source is timed both plain and releasing each block's pages
   after the read (``madvise(MADV_DONTNEED)``, which drops them from this process but not from the page
   cache); the peaks of anonymous and file-backed RSS (sampled every step) are shown apart.

Run: ``python benchmarks/sae_training_benchmark.py [--seconds 20] [--json results.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from plmlens.features.sae import SAEConfig
from plmlens.features.train import train_sae

D = 512


class MemmapTokens:
    """A `TokenSource` over a float16 ``(n, d)`` file, memory-mapped read-only; with `release`, each read's
    pages are dropped from this process afterwards (they stay in the page cache)."""

    def __init__(self, path: Path, n_tokens: int, d: int, release: bool) -> None:
        self.array = np.memmap(path, dtype=np.float16, mode="r", shape=(n_tokens, d))
        self.n_tokens, self.d, self.release = n_tokens, d, release

    def read(self, start: int, stop: int) -> np.ndarray:
        block = np.asarray(self.array[start:stop], dtype=np.float32)
        if self.release:
            row = self.d * 2
            lo = (start * row) // mmap.PAGESIZE * mmap.PAGESIZE
            self.array._mmap.madvise(mmap.MADV_DONTNEED, lo, stop * row - lo)
        return block


def write_tokens(path: Path, n_tokens: int, d: int = D, seed: int = 0, chunk: int = 65_536) -> None:
    """Gaussian-ish float16 tokens: per-dimension means and spreads (log-normal), a few outlier dimensions."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 0.5, d)
    spread = rng.lognormal(0, 0.5, d)
    spread[rng.choice(d, 4, replace=False)] *= 10  # hidden states have a few large dimensions
    out = np.memmap(path, dtype=np.float16, mode="w+", shape=(n_tokens, d))
    for start in range(0, n_tokens, chunk):
        stop = min(start + chunk, n_tokens)
        out[start:stop] = mean + spread * rng.standard_normal((stop - start, d))
    out.flush()
    del out


def rss_parts_mb() -> dict[str, float]:
    """Current anonymous and file-backed resident memory, MB (Linux ``/proc/self/status``)."""
    parts = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:")):
            parts[line.split(":")[0]] = int(line.split()[1]) / 1024
    return parts


def high_water_mb() -> float:
    """``VmHWM``: this process's peak resident memory since it started, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class _EnoughError(Exception):
    """Raised from the progress callback once the time is up."""


def throughput(source, device: str, seconds: float, batch_size: int) -> dict:
    """Tokens per second of training the AntiBERTy-shaped SAE for about `seconds`."""
    config = SAEConfig(d_in=D, width=4096, k=32)
    times: list[float] = []

    def clock(state) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        if times[-1] - times[0] > seconds:
            raise _EnoughError

    with contextlib.suppress(_EnoughError):
        train_sae(source, config, epochs=100, batch_size=batch_size, device=device, progress=clock, progress_every=1)
    steps = len(times) - 1
    rate = steps * batch_size / (times[-1] - times[0]) if steps > 0 else float("nan")
    print(f"  {device}: {steps} steps of {batch_size} tokens in {times[-1] - times[0]:.1f} s: {rate:,.0f} tokens/s")
    return {"device": device, "steps_timed": steps, "batch_size": batch_size, "tokens_per_second": rate}


def memory_child(path: Path, n_tokens: int, release: bool) -> None:
    """Run in a fresh process: one epoch over the file; print peak memory as JSON."""
    source = MemmapTokens(path, n_tokens, D, release)
    before = high_water_mb()
    peaks = {"RssAnon": 0.0, "RssFile": 0.0}

    def sample(state) -> None:
        for key, value in rss_parts_mb().items():
            peaks[key] = max(peaks[key], value)

    start = time.perf_counter()
    _, record = train_sae(source, SAEConfig(d_in=D, width=128, k=8), batch_size=4096, progress=sample, progress_every=1)
    print(json.dumps({
        "n_tokens": n_tokens, "release": release, "tokens_seen": record.tokens_seen,
        "max_rss_mb": high_water_mb(), "max_rss_mb_before": before,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_anon_mb": peaks["RssAnon"], "peak_rss_file_mb": peaks["RssFile"],
        "seconds": time.perf_counter() - start,
    }))  # fmt: skip


def measure_memory(sizes: list[int], directory: Path, plain: bool) -> dict:
    runs = {}
    for n in sizes:
        path = directory / f"tokens_{n}.f16"
        write_tokens(path, n)
        for release in (False, True) if plain else (True,):
            command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(path), str(n)]
            command += ["--release"] if release else []
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs[f"{n}{'_release' if release else ''}"] = run
            print(f"  {n:>9,} tokens, {'released' if release else 'plain   '}: max RSS {run['max_rss_mb']:.0f} MB "
                  f"(anon peak {run['peak_rss_anon_mb']:.0f}, file peak {run['peak_rss_file_mb']:.0f}; "
                  f"{run['seconds']:.0f} s)", flush=True)  # fmt: skip
        path.unlink()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="training time per device")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=[200_000, 1_000_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "memory"])
    parser.add_argument("--plain", action="store_true", help="also measure memory without releasing pages")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--release", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(Path(args.memory_child[0]), int(args.memory_child[1]), args.release)
        return
    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpus": os.cpu_count(), "machine": platform.machine(), "cuda": torch.cuda.is_available()}  # fmt: skip
    print(f"torch {env['torch']}, {env['torch_threads']} threads, {env['cpus']} CPUs, CUDA {env['cuda']}")
    out: dict = {"environment": env}
    with tempfile.TemporaryDirectory() as tmp:
        if "throughput" not in args.skip:
            print(f"throughput: d={D}, width 4096, k=32, batch {args.batch_size}, ~{args.seconds:.0f} s per device")
            path = Path(tmp) / "throughput.f16"
            write_tokens(path, 200_000)
            source = MemmapTokens(path, 200_000, D, release=True)
            devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
            out["throughput"] = [throughput(source, device, args.seconds, args.batch_size) for device in devices]
            path.unlink()
        if "memory" not in args.skip:
            print(f"memory: one epoch over {args.memory_sizes} tokens (width 128), fresh process each", flush=True)
            out["memory"] = measure_memory(args.memory_sizes, Path(tmp), args.plain)

    print()
    print(f"{'figure':<48} {'value':>12}")
    for run in out.get("throughput", []):
        print(f"{'tokens/s, ' + run['device'] + ' (d=512, width 4096, k=32)':<48} {run['tokens_per_second']:>12,.0f}")
    if "memory" in out:
        small, large = args.memory_sizes
        for suffix, label in (("", "plain memmap"), ("_release", "pages released")):
            if f"{small}{suffix}" not in out["memory"]:
                continue
            a, b = out["memory"][f"{small}{suffix}"], out["memory"][f"{large}{suffix}"]
            print(
                f"{f'peak RSS MB {small:,} / {large:,} tokens, {label}':<48} "
                f"{a['max_rss_mb']:>5.0f} / {b['max_rss_mb']:.0f}  (ratio {b['max_rss_mb'] / a['max_rss_mb']:.2f})"
            )
            print(f"{'  peak anonymous RSS MB':<48} {a['peak_rss_anon_mb']:>5.0f} / {b['peak_rss_anon_mb']:.0f}")
            print(f"{'  peak file-backed RSS MB':<48} {a['peak_rss_file_mb']:>5.0f} / {b['peak_rss_file_mb']:.0f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
