"""Cost of `plmlens.analysis.analyze` on AntiBERTy over ProMod3 chains, in one run of this script.

Three figures:

1. **Overhead** -- wall time of ``analyze`` (all default properties, the null model and the bootstrap, as
   shipped) over the wall time of a bare forward pass with attentions on the same batches (the adapter's
   ``iter_layers`` drained without doing anything). Plain ``model(**inputs, output_attentions=True)`` on the
   same padded batches is timed for reference. The proteins are read into a list first, so loading is left
   out of both sides; property masks (contact maps ...) are computed inside ``analyze`` and so counted.
   The machine is shared and its speed drifts over seconds, so the variants take turns batch by batch (in
   an order rotating with the round and the batch) over several rounds; the headline compares the median
   round totals (per-round ratios, sums of per-batch minima and process CPU time are reported too).
   Target: <= 1.10.
2. **Speed-up over a provis-style loop** -- per-protein time of ``analyze`` against a Python loop over residue
   pairs written as salesforce/provis ``compute_edge_features.py`` does it (for every pair ``(from, to)`` and
   every feature, ``get_values`` returns a dict of feature values and each is added to per-(layer, head) sums
   of the pair's attention), with a forward pass per protein as provis does. The fair comparison is against
   ``analyze(null=False, n_bootstrap=0)`` (the loop has no null model or bootstrap); ``analyze`` as shipped is
   reported too. A literal per-(layer, head, i, j) scalar loop is also timed on one protein, against
   ``analyze`` on that protein alone. Both loops are checked to reproduce the accumulator's contact ``arcs``
   and ``hits`` exactly (the provis-style loop those of every feature). Target: >= 20x.
3. **Memory** -- peak resident memory (``ru_maxrss``) of ``analyze`` over 100 and 1,000 streamed proteins,
   each in a fresh subprocess; also the peak during ``analyze`` alone (the high-water mark is reset after
   the model is loaded, via ``/proc/self/clear_refs``, as loading peaks higher). Target: flat.

Run: ``python benchmarks/analyze_benchmark.py [--quick] [--json results.json]``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from plmlens.analysis import DEFAULT_PROPERTIES, Accumulator, analyze
from plmlens.models import load_model
from plmlens.proteins import STANDARD_AMINO_ACIDS, Protein, Skipped, contact_map, iter_records
from plmlens.proteins.record import SS_CLASSES, SS_UNKNOWN

SOURCE = "promod3::min_length=100,max_length=300"
THRESHOLD = 0.3  # analyze's default θ


# -- inputs --------------------------------------------------------------------------------------------


def read_proteins(source: str, n: int) -> list[Protein]:
    """The first `n` readable proteins of `source`, materialised."""
    records = (r for r in iter_records(source) if not isinstance(r, Skipped))
    return list(itertools.islice(records, n))


def batched(proteins: Sequence[Protein], size: int) -> list[list[Protein]]:
    return [list(proteins[i : i + size]) for i in range(0, len(proteins), size)]


# -- 1. overhead ---------------------------------------------------------------------------------------


def run_bare(adapter, batch: list[Protein], max_length: int) -> None:
    """The adapter's layer stream with attentions, consumed without doing anything."""
    for _ in adapter.iter_layers(batch, max_length=max_length, hidden_states=False):
        pass


def run_plain(adapter, batch: list[Protein], max_length: int) -> None:
    """The transformers module itself with ``output_attentions=True`` on the same padded batch."""
    with torch.no_grad():
        encoding = adapter.encode(batch, max_length=max_length)
        adapter.model(**encoding.model_inputs(adapter.device), output_attentions=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(function: Callable[[], object]) -> tuple[float, float]:
    """Wall and process CPU seconds of one call."""
    cpu, start = cpu_seconds(), time.perf_counter()
    function()
    return time.perf_counter() - start, cpu_seconds() - cpu


def interleaved(
    variants: dict[str, Callable[[list[Protein]], object]], batches: list[list[Protein]], rounds: int
) -> dict[str, dict[str, list[list[float]]]]:
    """Wall and CPU seconds of each variant on each batch in each round: ``out[name]["wall"][round][batch]``.

    The variants take turns batch by batch (in an order rotating with the round and the batch), so that
    each sees the same machine load; the machine is shared and its speed drifts over seconds.
    """
    names = list(variants)
    out = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(rounds):
        for name in names:
            out[name]["wall"].append([])
            out[name]["cpu"].append([])
        for i, batch in enumerate(batches):
            shift = (r + i) % len(names)
            for name in names[shift:] + names[:shift]:
                wall, cpu = timed(lambda name=name, batch=batch: variants[name](batch))
                out[name]["wall"][r].append(wall)
                out[name]["cpu"][r].append(cpu)
        totals = ", ".join(f"{name} {sum(out[name]['wall'][r]):.2f}" for name in names)
        print(f"  round {r + 1}/{rounds} (wall s): {totals}", flush=True)
    return out


def ratios(times: dict, name: str, reference: str, kind: str = "wall") -> dict[str, float]:
    """`name` over `reference`: of the median round totals, median of per-round ratios, and of the sums
    of per-batch minima over rounds (the least disturbed estimate)."""
    a, b = np.array(times[name][kind]), np.array(times[reference][kind])  # (rounds, batches)
    return {
        "of_medians": float(np.median(a.sum(1)) / np.median(b.sum(1))),
        "median_per_round": float(np.median(a.sum(1) / b.sum(1))),
        "of_batch_minima": float(a.min(0).sum() / b.min(0).sum()),
    }


def measure_overhead(adapter, proteins: list[Protein], args: argparse.Namespace) -> dict:
    batches = batched(proteins, args.batch_size)
    kwargs = {"batch_size": args.batch_size, "max_length": args.max_length}
    variants = {
        "bare_iter_layers": lambda batch: run_bare(adapter, batch, args.max_length),
        "plain_output_attentions": lambda batch: run_plain(adapter, batch, args.max_length),
        "analyze_shipped": lambda batch: analyze(adapter, batch, **kwargs),
        "analyze_no_null_no_boot": lambda batch: analyze(adapter, batch, null=False, n_bootstrap=0, **kwargs),
    }
    if args.torch_engine:  # the statistics engine GPUs use, here on the CPU, against the numpy one shipped for it
        variants["analyze_torch_engine"] = lambda batch: analyze(adapter, batch, engine="torch", **kwargs)
    for variant in variants.values():  # warm-up, untimed
        variant(batches[0])
    times = interleaved(variants, batches, args.rounds)
    median_total = {name: float(np.median(np.sum(t["wall"], axis=1))) for name, t in times.items()}
    extra = {}
    if args.torch_engine:
        extra["overhead_torch_engine"] = ratios(times, "analyze_torch_engine", "bare_iter_layers")
    return {
        "n_proteins": len(proteins),
        "n_residues": sum(len(p) for p in proteins),
        "batch_size": args.batch_size,
        "n_batches": len(batches),
        "rounds": args.rounds,
        "median_total_wall_seconds": median_total,
        "overhead": ratios(times, "analyze_shipped", "bare_iter_layers"),
        "overhead_cpu": ratios(times, "analyze_shipped", "bare_iter_layers", "cpu"),
        "overhead_no_null_no_boot": ratios(times, "analyze_no_null_no_boot", "bare_iter_layers"),
        "overhead_vs_plain": ratios(times, "analyze_shipped", "plain_output_attentions"),
        **extra,
        "bare_vs_plain": ratios(times, "bare_iter_layers", "plain_output_attentions"),
        "seconds": times,
    }


# -- 2. provis-style loop ------------------------------------------------------------------------------
# Feature classes in the manner of provis' attention_analysis/features.py: ``get_values(item, from, to)``
# returns a dict of feature name -> value for one residue pair. Undefined entries (no coordinates, unknown
# DSSP) are reported under ``<name>:undefined`` so that, as in the accumulator, they can be left out of the
# denominators. ProMod3 records carry no binding-site or PTM labels (all undefined), so those features are
# omitted from the loop; this only makes the loop cheaper.


class ContactMapFeature:
    def get_values(self, item: dict, from_index: int, to_index: int) -> dict[str, int]:
        if not item["contact_defined"][from_index, to_index]:
            return {"contact:undefined": 1}
        contact1 = item["contact_map"][from_index, to_index]
        contact2 = item["contact_map"][to_index, from_index]
        assert contact1 == contact2
        return {"contact": 1} if contact1 else {}


class SecStructFeature:
    def get_values(self, item: dict, from_index: int, to_index: int) -> dict[str, int]:
        to_secstruct = item["secondary"][to_index]
        if to_secstruct is None:
            return {}
        return {to_secstruct: 1}


class AminoAcidFeature:
    def get_values(self, item: dict, from_index: int, to_index: int) -> dict[str, int]:
        residue = item["primary"][to_index]
        return {f"aa_{residue}": 1} if residue in STANDARD_AMINO_ACIDS else {}


FEATURES = (ContactMapFeature(), SecStructFeature(), AminoAcidFeature())
UNDEFINED_OF = {"contact": "contact:undefined", **{name: "secondary:undefined" for name in SS_CLASSES}}
FEATURE_NAMES = ("contact", *SS_CLASSES, *(f"aa_{letter}" for letter in STANDARD_AMINO_ACIDS))


def provis_item(protein: Protein) -> dict:
    contacts = contact_map(protein)
    ss_of = {letter: name for name, letters in SS_CLASSES.items() for letter in letters}
    dssp = protein.dssp or SS_UNKNOWN * len(protein)
    return {
        "id": protein.id,
        "primary": protein.sequence,
        "contact_map": contacts.filled(False),
        "contact_defined": ~np.ma.getmaskarray(contacts),
        "secondary": ["secondary:undefined" if c == SS_UNKNOWN else ss_of.get(c) for c in dssp],
    }


def provis_loop(attns: torch.Tensor, item: dict) -> dict[str, dict[str, torch.Tensor]]:
    """provis' analyze_heads inner loop for one protein; `attns` (layers, heads, n, n), special tokens removed.

    Returns the four sums per feature name, each (layers, heads) float64.
    """
    n_layers, n_heads, seq_len, _ = attns.shape
    sums: dict[str, dict[str, torch.Tensor]] = defaultdict(
        lambda: {key: torch.zeros((n_layers, n_heads), dtype=torch.double) for key in ("hits", "weight_hits")}
    )
    high = (attns > THRESHOLD).double()
    attns = attns.double()
    # As provis' weight_total: totals over all pairs, vectorised.
    total = {"arcs": high.sum((2, 3)), "weight": attns.sum((2, 3))}
    for to_index in range(seq_len):
        for from_index in range(seq_len):
            for feature in FEATURES:
                feature_dict = feature.get_values(item, from_index, to_index)
                for feature_name, value in feature_dict.items():
                    sums[feature_name]["hits"] += high[:, :, from_index, to_index] * value
                    sums[feature_name]["weight_hits"] += attns[:, :, from_index, to_index] * value
    return _with_denominators(sums, total, n_layers, n_heads)


def scalar_loop(attns: np.ndarray, item: dict) -> dict[str, dict[str, torch.Tensor]]:
    """The same sums by a literal loop over layer, head, i, j with Python-level indexing and dict updates."""
    n_layers, n_heads, seq_len, _ = attns.shape
    hits: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((n_layers, n_heads)))
    weight_hits: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((n_layers, n_heads)))
    arcs = np.zeros((n_layers, n_heads))
    weight = np.zeros((n_layers, n_heads))
    for layer in range(n_layers):
        for head in range(n_heads):
            for i in range(seq_len):
                for j in range(seq_len):
                    a = attns[layer, head, i, j]
                    weight[layer, head] += a
                    high = a > THRESHOLD
                    if high:
                        arcs[layer, head] += 1
                    for feature in FEATURES:
                        for name, value in feature.get_values(item, i, j).items():
                            weight_hits[name][layer, head] += a * value
                            if high:
                                hits[name][layer, head] += value
    sums = {
        name: {"hits": torch.from_numpy(hits[name]), "weight_hits": torch.from_numpy(weight_hits[name])}
        for name in set(hits) | set(weight_hits)
    }
    total = {"arcs": torch.from_numpy(arcs), "weight": torch.from_numpy(weight)}
    return _with_denominators(sums, total, n_layers, n_heads)


def _with_denominators(sums: dict, total: dict, n_layers: int, n_heads: int) -> dict[str, dict[str, torch.Tensor]]:
    """All four sums of every feature, including those without hits in this protein (their arcs still count)."""
    zero = torch.zeros((n_layers, n_heads), dtype=torch.double)
    out = {}
    for name in FEATURE_NAMES:
        values = sums.get(name, {"hits": zero, "weight_hits": zero})
        undefined = sums.get(UNDEFINED_OF.get(name, ""), {"hits": zero, "weight_hits": zero})
        out[name] = {
            "arcs": total["arcs"] - undefined["hits"],
            "hits": values["hits"],
            "weight": total["weight"] - undefined["weight_hits"],
            "weight_hits": values["weight_hits"],
        }
    return out


def add_sums(into: dict, new: dict) -> None:
    for name, values in new.items():
        if name not in into:
            into[name] = {key: value.clone() for key, value in values.items()}
        else:
            for key, value in values.items():
                into[name][key] += value


def check_contacts(loop_sums: dict, result, label: str) -> dict:
    """Assert the loop's contact arcs and hits equal the accumulator's (integer counts: exactly)."""
    acc = result.accumulator
    k = acc.property_names.index("contact")
    report = {}
    for key in ("arcs", "hits"):
        mine = loop_sums["contact"][key].numpy()
        theirs = acc.sums[key][k]
        assert np.array_equal(mine, theirs), f"{label}: contact {key} differ from the accumulator's"
        report[key] = float(theirs.sum())
    for key in ("weight", "weight_hits"):
        mine = loop_sums["contact"][key].numpy()
        assert np.allclose(mine, acc.sums[key][k], rtol=1e-5, atol=1e-6), f"{label}: contact {key} differ"
    return report


def loop_one(adapter, protein: Protein, loop: Callable, max_length: int) -> dict:
    """Forward pass over one protein (as provis: one at a time) and the loop over its attention."""
    attns = adapter.attention(protein, max_length=max_length)  # (layers, heads, n, n), residues only
    return loop(torch.from_numpy(attns) if loop is provis_loop else attns, provis_item(protein))


def statistics_only(adapter, proteins: list[Protein], max_length: int) -> tuple[float, float]:
    """Seconds per protein of the statistics alone, on attention computed beforehand: the provis-style loop
    against the accumulator (one protein at a time, all default properties, no null model, no bootstrap)."""
    attentions = [adapter.attention(p, max_length=max_length) for p in proteins]
    loop_seconds = accumulator_seconds = 0.0
    for protein, attns in zip(proteins, attentions, strict=True):
        loop_seconds += timed(lambda a=attns, p=protein: provis_loop(torch.from_numpy(a), provis_item(p)))[0]

        def accumulate(a=attns, p=protein) -> None:
            acc = Accumulator(adapter.n_layers, adapter.n_heads, DEFAULT_PROPERTIES, null=False, n_bootstrap=0)
            n = a.shape[-1]
            batch = acc.start_batch([p], [n], positions=[0])
            for layer in range(a.shape[0]):
                batch.add_layer(layer, torch.from_numpy(a[layer][None]))
            acc.commit(batch)

        accumulator_seconds += timed(accumulate)[0]
    return loop_seconds / len(proteins), accumulator_seconds / len(proteins)


def measure_provis(adapter, proteins: list[Protein], args: argparse.Namespace) -> dict:
    few = proteins[: args.provis_proteins]
    kwargs = {"batch_size": args.batch_size, "max_length": args.max_length}
    results: dict = {}
    provis_sums: dict = {}

    # Round i: analyze over all `few` proteins (fair and as shipped) and the provis loop over protein i,
    # in rotating order, so that both sides see the same machine load.
    def fair(batch: list[Protein]) -> None:
        results["fair"] = analyze(adapter, batch, null=False, n_bootstrap=0, **kwargs)

    def shipped(batch: list[Protein]) -> None:
        results["shipped"] = analyze(adapter, batch, **kwargs)

    steps = {"analyze_fair": fair, "analyze_shipped": shipped, "provis_loop": None}
    wall: dict[str, list[float]] = {name: [] for name in steps}
    for i, protein in enumerate(few):
        names = list(steps)[i % len(steps) :] + list(steps)[: i % len(steps)]
        for name in names:
            if name == "provis_loop":
                seconds, _ = timed(
                    lambda p=protein: add_sums(provis_sums, loop_one(adapter, p, provis_loop, args.max_length))
                )
            else:
                seconds, _ = timed(lambda name=name: steps[name](few))
            wall[name].append(seconds)
        print(f"  protein {i + 1}/{len(few)} ({len(protein)} residues): provis loop {wall['provis_loop'][-1]:.2f} s, "
              f"analyze fair {wall['analyze_fair'][-1]:.2f} s for all {len(few)}", flush=True)  # fmt: skip
    analyze_fair = statistics.median(wall["analyze_fair"]) / len(few)
    analyze_shipped = statistics.median(wall["analyze_shipped"]) / len(few)
    provis = sum(wall["provis_loop"]) / len(few)
    provis_statistics, analyze_statistics = statistics_only(adapter, few, args.max_length)

    contact_counts = check_contacts(provis_sums, results["fair"], "provis loop")
    check_contacts(provis_sums, results["shipped"], "provis loop")
    acc = results["fair"].accumulator  # the other features too (sums of counts: exact)
    for name, values in provis_sums.items():
        k = acc.property_names.index(name)
        for key in ("arcs", "hits"):
            assert np.array_equal(values[key].numpy(), acc.sums[key][k]), f"provis loop: {name} {key} differ"

    out = {
        "n_proteins": len(few),
        "residues": [len(p) for p in few],
        "seconds": wall,
        "analyze_fair_s_per_protein": analyze_fair,
        "analyze_shipped_s_per_protein": analyze_shipped,
        "provis_s_per_protein": provis,
        "speedup_fair": provis / analyze_fair,
        "speedup_vs_shipped": provis / analyze_shipped,
        "provis_statistics_s_per_protein": provis_statistics,
        "analyze_statistics_s_per_protein": analyze_statistics,
        "speedup_statistics_only": provis_statistics / max(analyze_statistics, 1e-9),
        "contact_counts_checked": contact_counts,
        "features_checked": sorted(provis_sums),
    }
    if args.scalar_proteins:
        # The literal per-(layer, head, i, j) loop, on one protein, against analyze on that protein alone
        # (a batch of one, so no batching gain for analyze), timed just before and just after it.
        protein = few[0]
        scalar_sums: dict = {}
        before, _ = timed(lambda: fair([protein]))
        scalar, _ = timed(lambda: scalar_sums.update(loop_one(adapter, protein, scalar_loop, args.max_length)))
        after, _ = timed(lambda: fair([protein]))
        check_contacts(scalar_sums, results["fair"], "scalar loop")
        single = (before + after) / 2
        print(f"  scalar loop: {scalar:.1f} s for {len(protein)} residues; analyze fair on it alone {single:.2f} s")
        out.update(
            scalar_residues=len(protein),
            scalar_s_per_protein=scalar,
            scalar_analyze_fair_single_seconds=[before, after],
            scalar_speedup_fair=scalar / single,
        )
    return out


# -- 3. memory -----------------------------------------------------------------------------------------


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux ``clear_refs``), so the next peak is analyze's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return high_water_mb() is not None


def high_water_mb() -> float | None:
    """``VmHWM``, the high-water mark that ``clear_refs`` resets (``ru_maxrss`` also keeps the marks recorded
    when threads exit, such as the layer stream's workers, so it cannot be reset)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def memory_child(n: int, args: argparse.Namespace) -> None:
    """Run in a fresh process: analyze `n` streamed proteins and print peak RSS as JSON."""
    adapter = load_model(args.model)
    gc.collect()
    load_peak = max_rss_mb()
    reset = reset_peak_rss()
    start_rss = high_water_mb()
    start = time.perf_counter()
    result = analyze(adapter, iter_records(args.source), limit=n, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    report = {
        "n_proteins": result.accumulator.n_proteins,
        "n_residues": result.accumulator.n_residues,
        "max_rss_mb": max_rss_mb(),  # getrusage: the whole process, model loading included
        "max_rss_mb_model_load": load_peak,
        "peak_reset": reset,
        "rss_mb_before_analyze": start_rss if reset else None,
        "max_rss_mb_during_analyze": high_water_mb() if reset else None,
        "seconds": seconds,
    }
    print(json.dumps(report))


def measure_memory(args: argparse.Namespace) -> dict:
    runs = {}
    for n in args.memory_sizes:
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n)]
        command += ["--model", args.model, "--source", args.source, "--batch-size", str(args.batch_size)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        runs[n] = run = json.loads(done.stdout.strip().splitlines()[-1])
        during = run["max_rss_mb_during_analyze"]
        print(
            f"  {n:>5} proteins: max RSS {run['max_rss_mb']:.0f} MB, during analyze "
            f"{during if during is None else round(during)} MB ({run['seconds']:.0f} s)",
            flush=True,
        )
    small, large = runs[min(runs)], runs[max(runs)]
    out = {"runs": {str(n): value for n, value in runs.items()}, "ratio": large["max_rss_mb"] / small["max_rss_mb"]}
    if small["peak_reset"] and large["peak_reset"]:
        out["ratio_during_analyze"] = large["max_rss_mb_during_analyze"] / small["max_rss_mb_during_analyze"]
        out["analyze_increment_mb"] = {
            str(n): v["max_rss_mb_during_analyze"] - v["rss_mb_before_analyze"] for n, v in runs.items()
        }
    return out


# -- main ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="antiberty")
    parser.add_argument("--source", default=SOURCE, help=f"protein source (default {SOURCE})")
    parser.add_argument("--proteins", type=int, default=64, help="proteins timed for the overhead")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--provis-proteins", type=int, default=4, help="proteins for the provis-style loop")
    parser.add_argument("--scalar-proteins", type=int, default=1, help="proteins for the per-(layer, head) loop")
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=[100, 1000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["overhead", "provis", "memory"])
    parser.add_argument("--quick", action="store_true", help="small smoke run (a minute or two)")
    parser.add_argument("--torch-engine", action="store_true", help="also time analyze with engine='torch'")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # truncation and model-loading chatter
    if args.memory_child is not None:
        memory_child(args.memory_child, args)
        return
    if args.quick:
        args.proteins, args.rounds, args.provis_proteins, args.scalar_proteins = 16, 2, 1, 0
        args.memory_sizes = [8, 24]

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "model": args.model,
        "source": args.source,
        "properties": list(DEFAULT_PROPERTIES),
        "threshold": THRESHOLD,
        "quick": args.quick,
    }
    print(f"torch {env['torch']}, {env['torch_threads']} threads, {env['cpus']} CPUs; {args.model} on {args.source}")
    out: dict = {"environment": env}
    adapter = load_model(args.model)
    proteins = read_proteins(args.source, max(args.proteins, args.provis_proteins, args.scalar_proteins))
    if "overhead" not in args.skip:
        print(f"overhead: {args.proteins} proteins, batch {args.batch_size}, {args.rounds} rounds", flush=True)
        out["overhead"] = measure_overhead(adapter, proteins[: args.proteins], args)
    if "provis" not in args.skip:
        print(f"provis-style loop: {args.provis_proteins} proteins", flush=True)
        out["provis"] = measure_provis(adapter, proteins, args)
    if "memory" not in args.skip:
        print(f"memory: {args.memory_sizes} proteins, fresh process each", flush=True)
        out["memory"] = measure_memory(args)

    print()
    print(f"{'figure':<44} {'value':>10}  target")
    if "overhead" in out:
        o = out["overhead"]
        print(f"{'overhead analyze / bare iter_layers (wall)':<46} {o['overhead']['of_medians']:>9.3f}x  <= 1.10")
        for label, key in (("analyze / bare", "overhead"), ("analyze / bare, CPU time", "overhead_cpu"),
                           ("analyze null=False, n_bootstrap=0 / bare", "overhead_no_null_no_boot"),
                           ("analyze / plain output_attentions", "overhead_vs_plain"),
                           ("analyze, torch engine / bare", "overhead_torch_engine"),
                           ("bare / plain output_attentions", "bare_vs_plain")):  # fmt: skip
            if key not in o:
                continue
            r = o[key]
            print(f"{'  ' + label:<46} {r['of_medians']:>9.3f}x  (per-round median {r['median_per_round']:.3f}, "
                  f"batch minima {r['of_batch_minima']:.3f})")  # fmt: skip
        for name, value in o["median_total_wall_seconds"].items():
            print(f"{'  median total s: ' + name:<46} {value:>9.2f}s")
    if "provis" in out:
        p = out["provis"]
        print(f"{'speed-up provis loop / accumulator (statistics)':<46} {p['speedup_statistics_only']:>9.1f}x  >= 20")
        print(f"{'  end to end, incl. forward (fair)':<46} {p['speedup_fair']:>9.1f}x  (forward-bound)")
        print(f"{'  end to end, analyze as shipped':<46} {p['speedup_vs_shipped']:>9.1f}x")
        print(f"{'  s/protein provis loop (incl. forward)':<46} {p['provis_s_per_protein']:>9.3f}s")
        print(f"{'  s/protein analyze fair':<46} {p['analyze_fair_s_per_protein']:>9.3f}s")
        print(f"{'  s/protein analyze shipped':<46} {p['analyze_shipped_s_per_protein']:>9.3f}s")
        if "scalar_s_per_protein" in p:
            print(f"{'  per-(layer, head, i, j) loop / analyze fair':<46} {p['scalar_speedup_fair']:>9.1f}x")
    if "memory" in out:
        mem = out["memory"]
        small, large = (str(n) for n in args.memory_sizes)
        runs = mem["runs"]
        print(f"{f'max RSS {large} / {small} proteins':<46} {mem['ratio']:>9.3f}x  flat")
        if "ratio_during_analyze" in mem:
            print(f"{'  peak during analyze only':<46} {mem['ratio_during_analyze']:>9.3f}x")
        for n in (small, large):
            r = runs[n]
            during = r["max_rss_mb_during_analyze"]
            print(f"{f'  max RSS MB, {n} proteins':<46} {r['max_rss_mb']:>9.0f}   (model load "
                  f"{r['max_rss_mb_model_load']:.0f}; during analyze {during and round(during)}, "
                  f"from {r['rss_mb_before_analyze'] and round(r['rss_mb_before_analyze'])})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
