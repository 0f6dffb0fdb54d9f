"""Cost of `plmlens.features.store.extract` on AntiBERTy over synthetic antibody domains, in one run of this script.

Two figures, on the CPU and, where ``torch.cuda.is_available()``, on the GPU as well:

1. **Overhead** -- wall time of extracting the residue hidden states of one layer to a float16 store over
   the wall time of a bare forward pass that returns hidden states on the same batches. The bare pass is
   ``adapter.encode(batch)`` then ``adapter.model(**encoding.model_inputs(device), output_hidden_states=True)``
   under ``torch.no_grad``, over the batches ``extract`` forms: read-ahead windows of
   ``WINDOW_BATCHES * max_tokens`` tokens, each packed by `pack_batches` on the proteins' token counts under
   the same ``max_tokens``. The plan is checked against the batch count and padded tokens ``extract``
   reports through its ``progress`` callback. Two ways of comparing:

   * **end to end** -- one ``extract`` call over every protein into a fresh temporary directory (numbering,
     planning, the forward passes, float16 copies, part, index and record files) against the summed bare
     passes over the same proteins;
   * **per batch** -- ``extract`` called on each batch's proteins alone (which it runs as that one batch)
     against the bare pass on that batch. Each call also pays ``extract``'s fixed costs (fingerprint,
     progress, index and record files), so this side is an upper bound.

   Both for the last layer (``layers=[8]``: a full forward) and for a middle layer (``layers=[4]``: the
   pass stops after block 4, so below 1). The proteins are materialised first, so generating them is left
   out. The machine is shared and its speed drifts over seconds, so the variants take turns (end to end:
   whole calls; per batch: batch by batch) in an order rotating with the round and the batch, over several
   rounds; the headline compares the median round totals (per-round ratios and sums of per-batch minima
   are reported too). On the CPU the timing uses a budget of 1,024 tokens (``--max-tokens``) rather than
   the shipped 4,096, so that a modest protein set gives several batches to interleave; fixed costs per
   batch weigh more in small batches, so this errs against ``extract``. On the GPU the shipped budget is
   used, over more proteins. Target: last layer <= 1.10.
2. **Memory** -- peak resident memory (``ru_maxrss``) of ``extract`` (last layer, shipped token budget)
   over N and 4N streamed proteins (N = 200; 50 with ``--quick``), each in a fresh subprocess; also the peak
   during ``extract`` alone (the high-water mark ``VmHWM`` is reset after the model is loaded, via
   ``/proc/self/clear_refs``, as loading peaks higher) and, on CUDA, the peak allocated GPU memory.
   Target: flat. ``extract`` buffers states until a part of ``PART_RESIDUES`` residues fills or a
   read-ahead window ends, so the peak may grow with N up to that bound (reported as ``part_buffer_mb``:
   the buffered float16 states plus their concatenated copy) and no further.

Run: ``python benchmarks/features_extract_benchmark.py [--quick] [--json results.json]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

# The peak-memory probes of the analyze benchmark (this script runs from benchmarks/, beside it).
from analyze_benchmark import high_water_mb, max_rss_mb, reset_peak_rss
from plmlens.analysis.run import WINDOW_BATCHES, default_max_tokens, pack_batches
from plmlens.features.store import PART_RESIDUES, extract
from plmlens.models import load_model
from plmlens.proteins import Protein
from plmlens.proteins.repertoire import synthetic_repertoire

MODEL = "antiberty"
LAST, MIDDLE = 8, 4  # AntiBERTy has 8 layers
SEED = 7
TARGET = 1.10


# -- inputs --------------------------------------------------------------------------------------------


def proteins_of(n: int, seed: int = SEED) -> list[Protein]:
    """`n` synthetic antibody variable domains, materialised."""
    return [Protein(chain.id, chain.sequence) for chain in synthetic_repertoire(n, seed)]


def planned(adapter, proteins: Sequence[Protein], max_tokens: int, max_length: int) -> list[list[int]]:
    """The batches (protein indices) ``extract`` runs: read-ahead windows, each packed by `pack_batches`."""
    tokens = [int(adapter.encode([p], max_length=max_length).input_ids.shape[1]) for p in proteins]
    budget = WINDOW_BATCHES * max_tokens
    batches: list[list[int]] = []
    start = total = 0
    for end, count in enumerate(tokens, start=1):
        total += count
        if total >= budget or end == len(tokens):
            batches += [[start + k for k in batch] for batch in pack_batches(tokens[start:end], max_tokens)]
            start, total = end, 0
    return batches


# -- timing --------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, function: Callable[[], object]) -> float:
    """Wall seconds of one call, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def bare(adapter, batch: list[Protein], max_length: int) -> None:
    """The transformers module itself, returning every layer's hidden states, on one padded batch."""
    with torch.no_grad():
        encoding = adapter.encode(batch, max_length=max_length)
        adapter.model(**encoding.model_inputs(adapter.device), output_hidden_states=True)


class Extraction:
    """``extract`` into a fresh temporary directory per call (removed afterwards, outside the timing)."""

    def __init__(self, adapter, layer: int, max_tokens: int, max_length: int, root: Path) -> None:
        self.adapter, self.layer, self.max_tokens, self.max_length, self.root = (
            adapter, layer, max_tokens, max_length, root)  # fmt: skip
        self.last_state = None

    def __call__(self, proteins: list[Protein], n_batches: int | None = None) -> None:
        directory = Path(tempfile.mkdtemp(dir=self.root))
        extract(self.adapter, proteins, [self.layer], directory, max_tokens=self.max_tokens,
                max_length=self.max_length, progress=self._keep)  # fmt: skip
        if n_batches is not None and self.last_state.n_batches != n_batches:
            raise RuntimeError(f"extract ran {self.last_state.n_batches} batches, not {n_batches}")

    def _keep(self, state) -> None:
        self.last_state = state

    def clean(self) -> None:
        for path in self.root.iterdir():
            shutil.rmtree(path)


def rotating(names: list[str], k: int) -> list[str]:
    shift = k % len(names)
    return names[shift:] + names[:shift]


def interleaved(
    variants: dict[str, Callable[[int], object]], n_steps: int, rounds: int, device: torch.device, after: Callable
) -> dict[str, list[list[float]]]:
    """Wall seconds of each variant at each step in each round: ``out[name][round][step]``; the variants
    take turns step by step, in an order rotating with the round and the step."""
    names = list(variants)
    out: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names:
            out[name].append([])
        for step in range(n_steps):
            for name in rotating(names, r + step):
                out[name][r].append(timed(device, lambda name=name, step=step: variants[name](step)))
                after()
        totals = ", ".join(f"{name} {sum(out[name][r]):.2f}" for name in names)
        print(f"    round {r + 1}/{rounds} (wall s): {totals}", flush=True)
    return out


def ratios(times: dict, name: str, reference: str) -> dict[str, float]:
    """`name` over `reference`: of the median round totals, median of per-round ratios, and of the sums of
    per-step minima over rounds (the least disturbed estimate)."""
    a, b = np.array(times[name]), np.array(times[reference])  # (rounds, steps)
    return {
        "of_medians": float(np.median(a.sum(1)) / np.median(b.sum(1))),
        "median_per_round": float(np.median(a.sum(1) / b.sum(1))),
        "of_step_minima": float(a.min(0).sum() / b.min(0).sum()),
    }


def check_plan(adapter, proteins, batches, extraction: Extraction) -> dict:
    """Run ``extract`` once (also the warm-up) and check that it formed the planned batches."""
    extraction(proteins)
    state = extraction.last_state
    tokens = [int(adapter.encode([p], max_length=extraction.max_length).input_ids.shape[1]) for p in proteins]
    padded = sum(len(batch) * max(tokens[k] for k in batch) for batch in batches)
    if state.n_batches != len(batches) or state.padded_tokens != padded:
        raise RuntimeError(f"extract ran {state.n_batches} batches, {state.padded_tokens} padded tokens; the plan "
                           f"has {len(batches)}, {padded}")  # fmt: skip
    return {"n_batches": len(batches), "padded_tokens": padded, "tokens": sum(tokens)}


def measure_overhead(adapter, proteins: list[Protein], args: argparse.Namespace, max_tokens: int) -> dict:
    device = adapter.device
    batches = planned(adapter, proteins, max_tokens, args.max_length)
    groups = [[proteins[k] for k in batch] for batch in batches]
    root = Path(tempfile.mkdtemp(prefix="plmlens-extract-bench-"))
    try:
        last = Extraction(adapter, LAST, max_tokens, args.max_length, root)
        middle = Extraction(adapter, MIDDLE, max_tokens, args.max_length, root)
        plan = check_plan(adapter, proteins, batches, last)
        middle(proteins)  # warm-up, untimed
        bare(adapter, groups[0], args.max_length)
        last.clean()

        def bare_all(_: int) -> None:
            for group in groups:
                bare(adapter, group, args.max_length)

        print(f"  end to end: {len(proteins)} proteins, {len(batches)} batches, {args.rounds} rounds", flush=True)
        whole = interleaved({"bare": bare_all, f"extract_L{LAST}": lambda _: last(proteins),
                             f"extract_L{MIDDLE}": lambda _: middle(proteins)},
                            1, args.rounds, device, last.clean)  # fmt: skip
        per_batch = None
        if args.per_batch_rounds:
            print(f"  per batch: {len(batches)} batches, {args.per_batch_rounds} rounds", flush=True)
            per_batch = interleaved({"bare": lambda k: bare(adapter, groups[k], args.max_length),
                                     f"extract_L{LAST}": lambda k: last(groups[k], 1),
                                     f"extract_L{MIDDLE}": lambda k: middle(groups[k], 1)},
                                    len(groups), args.per_batch_rounds, device, last.clean)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = {
        "n_proteins": len(proteins),
        "n_residues": sum(len(p) for p in proteins),
        "max_tokens": max_tokens,
        **plan,
        "rounds": args.rounds,
        "end_to_end": {f"L{layer}": ratios(whole, f"extract_L{layer}", "bare") for layer in (LAST, MIDDLE)},
        "median_total_wall_seconds": {name: float(np.median(np.sum(t, axis=1))) for name, t in whole.items()},
        "seconds": {"end_to_end": whole},
    }
    if per_batch is not None:
        out["per_batch"] = {f"L{layer}": ratios(per_batch, f"extract_L{layer}", "bare") for layer in (LAST, MIDDLE)}
        out["per_batch_rounds"] = args.per_batch_rounds
        out["seconds"]["per_batch"] = per_batch
    return out


# -- memory --------------------------------------------------------------------------------------------


def memory_child(n: int, args: argparse.Namespace) -> None:
    """Run in a fresh process: extract the last layer of `n` streamed proteins; print the peaks as JSON."""
    adapter = load_model(MODEL, device=args.device)
    cuda = adapter.device.type == "cuda"
    gc.collect()
    load_peak = max_rss_mb()
    reset = reset_peak_rss()
    start_rss = high_water_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats(adapter.device)
        gpu_before = torch.cuda.memory_allocated(adapter.device)
    streamed = (Protein(chain.id, chain.sequence) for chain in synthetic_repertoire(n, SEED))
    with tempfile.TemporaryDirectory(prefix="plmlens-extract-mem-") as directory:
        start = time.perf_counter()
        record = extract(adapter, streamed, [LAST], directory, max_length=args.max_length)
        seconds = time.perf_counter() - start
        store_mb = sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file()) / 2**20
    report = {
        "n_proteins": record["n_proteins"],
        "n_residues": record["n_residues"],
        "max_rss_mb": max_rss_mb(),  # getrusage: the whole process, model loading included
        "max_rss_mb_model_load": load_peak,
        "peak_reset": reset,
        "rss_mb_before_extract": start_rss if reset else None,
        "max_rss_mb_during_extract": high_water_mb() if reset else None,
        "store_mb": store_mb,
        "seconds": seconds,
    }
    if cuda:
        report["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated(adapter.device) / 2**20
        report["gpu_allocated_mb_before"] = gpu_before / 2**20
    print(json.dumps(report))


def measure_memory(args: argparse.Namespace, device: str, hidden_size: int) -> dict:
    runs = {}
    for n in (args.memory_n, 4 * args.memory_n):
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n), "--device", device,
                   "--max-length", str(args.max_length)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"memory run of {n} proteins on {device} failed: {done.stderr.strip()[-2000:]}")
        runs[n] = run = json.loads(done.stdout.strip().splitlines()[-1])
        during = run["max_rss_mb_during_extract"]
        gpu = f", GPU peak {run['gpu_peak_allocated_mb']:.0f} MB" if "gpu_peak_allocated_mb" in run else ""
        print(f"    {n:>5} proteins ({run['n_residues']:,} residues, store {run['store_mb']:.0f} MB): max RSS "
              f"{run['max_rss_mb']:.0f} MB, during extract {during if during is None else round(during)} MB{gpu} "
              f"({run['seconds']:.0f} s)", flush=True)  # fmt: skip
    small, large = runs[args.memory_n], runs[4 * args.memory_n]
    out = {
        "runs": {str(n): value for n, value in runs.items()},
        "ratio": large["max_rss_mb"] / small["max_rss_mb"],
        # Buffered float16 states of one part and their concatenated copy: the most the peak may grow by.
        "part_buffer_mb": 2 * PART_RESIDUES * hidden_size * 2 / 2**20,
    }
    if small["peak_reset"] and large["peak_reset"]:
        out["ratio_during_extract"] = large["max_rss_mb_during_extract"] / small["max_rss_mb_during_extract"]
        out["extract_increment_mb"] = {
            str(n): v["max_rss_mb_during_extract"] - v["rss_mb_before_extract"] for n, v in runs.items()
        }
    if "gpu_peak_allocated_mb" in small:
        out["gpu_ratio"] = large["gpu_peak_allocated_mb"] / small["gpu_peak_allocated_mb"]
    return out


# -- main ----------------------------------------------------------------------------------------------


def run_device(device: str, args: argparse.Namespace) -> dict:
    adapter = load_model(MODEL, device=device)
    cuda = adapter.device.type == "cuda"
    out: dict = {}
    if "overhead" not in args.skip:
        n = args.gpu_proteins if cuda else args.proteins
        max_tokens = default_max_tokens(adapter.device) if cuda else args.max_tokens
        print(f"[{device}] overhead: {n} proteins, max_tokens {max_tokens}", flush=True)
        out["overhead"] = measure_overhead(adapter, proteins_of(n), args, max_tokens)
    hidden_size = adapter.hidden_size
    del adapter
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    if "memory" not in args.skip:
        print(f"[{device}] memory: {args.memory_n} and {4 * args.memory_n} proteins, fresh process each", flush=True)
        out["memory"] = measure_memory(args, device, hidden_size)
    return out


def print_table(results: dict) -> None:
    print()
    print(f"{'figure':<50} {'value':>10}  target")
    for device, out in results.items():
        if "overhead" in out:
            o = out["overhead"]
            head = o["end_to_end"][f"L{LAST}"]["of_medians"]
            print(f"{f'[{device}] extract L{LAST} / bare forward (end to end)':<50} {head:>9.3f}x  <= {TARGET:.2f}")
            rows = [(f"extract L{MIDDLE} / bare (end to end)", o["end_to_end"][f"L{MIDDLE}"], "< 1")]
            for layer in (LAST, MIDDLE) if "per_batch" in o else ():
                rows.append((f"extract L{layer} / bare (per batch)", o["per_batch"][f"L{layer}"], ""))
            for label, r, target in rows:
                print(f"{'  ' + label:<50} {r['of_medians']:>9.3f}x  {target:<5}(per-round median "
                      f"{r['median_per_round']:.3f}, step minima {r['of_step_minima']:.3f})")  # fmt: skip
            r = o["end_to_end"][f"L{LAST}"]
            print(f"{'  (L' + str(LAST) + ' end to end, per-round median / minima)':<50} "
                  f"{r['median_per_round']:>9.3f}x  minima {r['of_step_minima']:.3f}")  # fmt: skip
            for name, value in o["median_total_wall_seconds"].items():
                print(f"{'  median total s: ' + name:<50} {value:>9.2f}s")
        if "memory" in out:
            mem = out["memory"]
            small, large = sorted(mem["runs"], key=int)
            print(f"{f'[{device}] max RSS {large} / {small} proteins':<50} {mem['ratio']:>9.3f}x  flat")
            if "ratio_during_extract" in mem:
                print(f"{'  peak during extract only':<50} {mem['ratio_during_extract']:>9.3f}x")
            if "gpu_ratio" in mem:
                print(f"{'  GPU peak allocated':<50} {mem['gpu_ratio']:>9.3f}x")
            for n in (small, large):
                r = mem["runs"][n]
                increment = mem.get("extract_increment_mb", {}).get(n)
                print(f"{f'  max RSS MB, {n} proteins':<50} {r['max_rss_mb']:>9.0f}   (model load "
                      f"{r['max_rss_mb_model_load']:.0f}; extract's own increment "
                      f"{increment if increment is None else round(increment)})")  # fmt: skip
            print(f"{'  bound on growth (one part buffered + copy), MB':<50} {mem['part_buffer_mb']:>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proteins", type=int, default=48, help="proteins timed on the CPU")
    parser.add_argument("--gpu-proteins", type=int, default=4000, help="proteins timed on CUDA")
    parser.add_argument("--max-tokens", type=int, default=1024, help="token budget of the CPU timing")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved end-to-end rounds; medians reported")
    parser.add_argument("--per-batch-rounds", type=int, default=3, help="interleaved per-batch rounds (0: none)")
    parser.add_argument("--memory-n", type=int, default=200, help="N: memory over N and 4N proteins")
    parser.add_argument("--skip", nargs="*", default=[], choices=["overhead", "memory", "cuda"])
    parser.add_argument("--quick", action="store_true", help="smaller run (about 5 minutes on two shared cores)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # model-loading chatter
    if args.memory_child is not None:
        memory_child(args.memory_child, args)
        return
    if args.quick:
        args.proteins, args.gpu_proteins, args.rounds, args.per_batch_rounds, args.memory_n = 24, 1000, 3, 3, 50

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and "cuda" not in args.skip else [])
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "model": MODEL,
        "devices": devices,
        "cuda_device": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "quick": args.quick,
        "argv": sys.argv[1:],
    }
    print(f"torch {env['torch']}, {env['torch_threads']} threads, {env['cpus']} CPUs; {MODEL} on {', '.join(devices)}")
    results = {device: run_device(device, args) for device in devices}
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, **results}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
