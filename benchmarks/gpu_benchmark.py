"""GPU cost of `plmlens.analysis.analyze` on ESM-2-650M- and ProtBert-shaped models over ProMod3 chains.

Two models with random weights (nothing is downloaded) and the published shapes: ESM-2 650M (33 layers,
20 heads, hidden 1280, rotary positions) and ProtBert (30 layers, 16 heads, hidden 1024). Each is built,
saved with its tokenizer by ``save_pretrained`` (in bfloat16, to halve the file) into a temporary directory
and loaded back with ``plmlens.models.load_model(dir, device=..., dtype=...)``, the path a user takes. The
proteins (default: the first 5,000 chains of at most 512 residues of Debian's ``promod3-data``) are read
into a list first, so loading is left out of every timing. After a short untimed warm-up, per model:

1. **Bare forward with attentions** -- the adapter's ``iter_layers(..., hidden_states=False,
   on_device=True)`` drained without doing anything, over exactly the batches ``analyze`` forms (the same
   read-ahead windows and ``pack_batches`` under the same token budget), with ``torch.cuda.synchronize()``
   around the timing. Run before and after ``analyze``; the faster run counts (so that first-use costs of
   new batch shapes are not charged to the reference). Reported in residues per second.
2. **analyze** -- over the same proteins with every property (the default set plus ``contact_ranges``),
   the null model and 200 bootstrap replicates, as shipped. Residues per second and the overhead ratio
   analyze / bare. Target: <= 1.15.
3. **GPU memory** -- peak allocated memory (``torch.cuda.max_memory_allocated`` after
   ``reset_peak_memory_stats``) of ``analyze`` over the first 500 proteins and over all of them. Target:
   flat (ratio about 1). Skipped when the device is not CUDA.
4. **Projected time of the paper's study** -- 5 models x 5,000 proteins x every property. ProtBert is the
   largest of the paper's five models by parameters (TAPE BERT, ProtBert, ProtBert-BFD, ProtAlbert,
   ProtXLNet; ProtBert-BFD has the same shape); ESM-2 650M is not among them and is larger still. The
   projection is 5 x the analyze time for 5,000 proteins of the slower of the two shapes, an upper bound
   as far as model size goes (reading the proteins and loading the models are left out); 5 x each model's
   own time is reported too. With ``--proteins`` other than 5,000 the time is scaled linearly.

Run on a machine with one GPU (minutes to some tens of minutes; needs ``apt-get install promod3-data``)::

    python benchmarks/gpu_benchmark.py --json gpu_benchmark.json

Check the script on a CPU in a minute or two (tiny shapes; the numbers mean nothing)::

    python benchmarks/gpu_benchmark.py --smoke --device cpu --dtype float32 --proteins 30
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

# The tokenizer vocabularies of the tiny test models are the real ones; the benchmark reuses them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models_fixtures import ESM_VOCAB, PROTBERT_VOCAB
from plmlens.analysis import analyze, default_max_tokens, get_properties, pack_batches
from plmlens.analysis.run import WINDOW_BATCHES
from plmlens.models import ModelAdapter, SequenceError, load_model, resolve_device
from plmlens.proteins import Protein, Skipped, iter_records
from plmlens.proteins.promod3 import DEFAULT_PATH as PROMOD3_PATH

SOURCE = "promod3::max_length=512"
PROPERTIES = ("default", "contact_ranges")  # every registered property
MODELS = ("esm2", "protbert")
PAPER_MODELS = 5
PAPER_PROTEINS = 5_000
OVERHEAD_TARGET = 1.15
GIB = 2**30


# -- models --------------------------------------------------------------------------------------------


def esm2_config(smoke: bool) -> transformers.EsmConfig:
    """facebook/esm2_t33_650M_UR50D's config (tiny layers and widths with `smoke`).

    Parameters
    ----------
    smoke : bool
        Shrink depth and width so that the script runs on a CPU in seconds.

    Returns
    -------
    transformers.EsmConfig
    """
    size = {"num_hidden_layers": 33, "num_attention_heads": 20, "hidden_size": 1280, "intermediate_size": 5120}
    if smoke:
        size = {"num_hidden_layers": 3, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}
    return transformers.EsmConfig(
        vocab_size=33, pad_token_id=1, mask_token_id=32, eos_token_id=2, max_position_embeddings=1026,
        position_embedding_type="rotary", token_dropout=True, emb_layer_norm_before=False, layer_norm_eps=1e-5,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **size,
    )  # fmt: skip


def protbert_config(smoke: bool) -> transformers.BertConfig:
    """Rostlab/prot_bert's config (tiny layers and widths with `smoke`).

    Parameters
    ----------
    smoke : bool
        Shrink depth and width so that the script runs on a CPU in seconds.

    Returns
    -------
    transformers.BertConfig
    """
    size = {"num_hidden_layers": 30, "num_attention_heads": 16, "hidden_size": 1024, "intermediate_size": 4096}
    if smoke:
        size = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}
    return transformers.BertConfig(
        vocab_size=30, max_position_embeddings=40_000, type_vocab_size=2, pad_token_id=0, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **size,
    )  # fmt: skip


def save_random_model(name: str, directory: Path, smoke: bool) -> None:
    """Build a randomly initialised model of shape `name` and save it with its tokenizer.

    Parameters
    ----------
    name : {"esm2", "protbert"}
        Which shape.
    directory : Path
        Where ``save_pretrained`` writes the weights (bfloat16), config and tokenizer files.
    smoke : bool
        Tiny shape.
    """
    torch.manual_seed(0)
    if name == "esm2":
        model = transformers.EsmModel(esm2_config(smoke))
        # EsmTokenizer reads its vocabulary from a file (save_pretrained rewrites the same file).
        vocab = directory / "vocab.txt"
        vocab.write_text("\n".join(ESM_VOCAB) + "\n")
        tokenizer = transformers.EsmTokenizer(str(vocab))
    else:
        model = transformers.BertModel(protbert_config(smoke))
        tokenizer = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(PROTBERT_VOCAB)}, do_lower_case=False)
    # bfloat16 halves the file and the time to write and read it; load_model casts to --dtype anyway.
    model.to(torch.bfloat16).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    gc.collect()


# -- inputs and batches --------------------------------------------------------------------------------


def check_source(source: str) -> None:
    """Exit with one line when the built-in ProMod3 source is asked for and its database is missing."""
    if source.split("::", 1)[0].strip().lower() == "promod3" and not PROMOD3_PATH.is_file():
        sys.exit(
            f"gpu_benchmark: {PROMOD3_PATH} is missing; apt-get install promod3-data, "
            "or pass --source (e.g. --source DIR_OF_PDB_FILES::dssp=false)"
        )


def read_proteins(source: str, n: int) -> list[Protein]:
    """The first `n` readable proteins of `source`, materialised (records that cannot be read are skipped).

    Parameters
    ----------
    source : str
        A plmlens protein source (see `plmlens.proteins.iter_records`).
    n : int
        How many proteins.

    Returns
    -------
    list of Protein
    """
    records = (r for r in iter_records(source) if not isinstance(r, Skipped))
    return list(itertools.islice(records, n))


def token_counts(adapter: ModelAdapter, proteins: Sequence[Protein], max_length: int) -> tuple[list, list[int]]:
    """Each protein's token count as ``analyze`` computes it (encoded alone, after truncation).

    Proteins the model cannot encode are dropped here, so that the bare pass and ``analyze`` see the same
    proteins at the same positions (``analyze`` would skip them).

    Returns
    -------
    (list of Protein, list of int)
        The encodable proteins and their token counts, special tokens included.
    """
    kept, tokens = [], []
    for protein in proteins:
        try:
            encoding = adapter.encode([protein], max_length=max_length)
        except SequenceError:
            continue
        kept.append(protein)
        tokens.append(int(encoding.input_ids.shape[1]))
    return kept, tokens


def analyze_batches(tokens: Sequence[int], max_tokens: int, batch_size: int | None = None) -> list[list[int]]:
    """The batches (protein indices) ``analyze`` runs, so that the bare pass times the very same work.

    ``analyze`` reads the proteins ahead in windows of about ``WINDOW_BATCHES * max_tokens`` tokens, in
    order, and packs each window with `pack_batches` (see ``plmlens.analysis.run._windows``); this mirrors
    it, and the caller checks the result against the batch count and padded tokens ``analyze`` reports.

    Parameters
    ----------
    tokens : sequence of int
        Token count of each protein, in input order.
    max_tokens : int
        Padded-token budget per batch.
    batch_size : int, optional
        At most this many proteins per batch.

    Returns
    -------
    list of list of int
    """
    budget = WINDOW_BATCHES * max_tokens
    batches: list[list[int]] = []
    start = total = 0
    for end, count in enumerate(tokens, start=1):
        total += count
        if total >= budget or end == len(tokens):
            window = list(tokens[start:end])
            batches += [[start + k for k in batch] for batch in pack_batches(window, max_tokens, batch_size)]
            start, total = end, 0
    return batches


def padded_tokens(tokens: Sequence[int], batches: list[list[int]]) -> int:
    """Tokens the batches cost with padding: each batch's size times its longest protein."""
    return sum(len(batch) * max(tokens[k] for k in batch) for batch in batches)


# -- timing --------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall time covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, function: Callable[[], Any]) -> tuple[Any, float]:
    """The value of ``function()`` and its wall seconds, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    value = function()
    synchronize(device)
    return value, time.perf_counter() - start


def drain(adapter: ModelAdapter, batch: list[Protein], max_length: int) -> int:
    """One forward pass with attentions kept on the device, layers consumed without doing anything.

    Returns
    -------
    int
        Residues in the batch as the model saw them (after truncation).
    """
    residues = 0
    for output in adapter.iter_layers(batch, max_length=max_length, hidden_states=False, on_device=True):
        residues = int(output.lengths.sum())
    return residues


def run_bare(adapter: ModelAdapter, proteins: list[Protein], batches: list[list[int]], max_length: int) -> int:
    """Drain every batch; returns the residues run."""
    return sum(drain(adapter, [proteins[k] for k in batch], max_length) for batch in batches)


def run_analyze(adapter: ModelAdapter, proteins: list[Protein], args: argparse.Namespace) -> dict:
    """Time ``analyze`` as shipped over `proteins` and, on CUDA, record its peak GPU memory.

    Parameters
    ----------
    adapter : ModelAdapter
    proteins : list of Protein
    args : argparse.Namespace
        ``max_length`` and ``max_tokens``.

    Returns
    -------
    dict
        ``seconds``, ``n_proteins``, ``n_residues``, what ``analyze`` reports about its batches and, on
        CUDA, ``memory`` (GiB: peak allocated, allocated before, peak reserved).
    """
    device = adapter.device
    cuda = device.type == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    result, seconds = timed(
        device, lambda: analyze(adapter, proteins, PROPERTIES, max_length=args.max_length, max_tokens=args.max_tokens)
    )
    acc, info = result.accumulator, result.info
    out = {
        "seconds": seconds,
        "n_proteins": acc.n_proteins,
        "n_residues": acc.n_residues,
        "settings": acc.config() | {"engine": acc.engine},
        **{key: info[key] for key in ("n_batches", "tokens", "padded_tokens", "padding_efficiency", "oom_retries")},
        "n_skipped": info["n_skipped"],
    }
    if cuda:
        out["memory"] = {
            "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
            "allocated_before_gib": before / GIB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
        }
    del result
    return out


# -- one model -----------------------------------------------------------------------------------------


def load_shape(name: str, directory: Path, args: argparse.Namespace, device: torch.device) -> ModelAdapter:
    """Save a random model of shape `name` to `directory` and load it back as a user would."""
    start = time.perf_counter()
    save_random_model(name, directory, args.smoke)
    saved = time.perf_counter()
    adapter = load_model(directory, device=device, dtype=args.dtype)
    print(f"  built and saved in {saved - start:.0f} s, loaded in {time.perf_counter() - saved:.0f} s: "
          f"{adapter.n_layers} layers x {adapter.n_heads} heads, {adapter.n_params / 1e6:.1f}M parameters, "
          f"{adapter.dtype} on {adapter.device}", flush=True)  # fmt: skip
    return adapter


def measure_model(name: str, proteins: list[Protein], args: argparse.Namespace, device: torch.device) -> dict:
    """All measurements of one model shape (see the module docstring).

    Parameters
    ----------
    name : {"esm2", "protbert"}
    proteins : list of Protein
        Read beforehand.
    args : argparse.Namespace
    device : torch.device

    Returns
    -------
    dict
    """
    print(f"{name}:", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"plmlens-gpu-{name}-") as directory:
        out = measure_adapter(load_shape(name, Path(directory), args, device), proteins, args)
    # The adapter is gone with measure_adapter's frame; give its memory back before the next model.
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def measure_adapter(adapter: ModelAdapter, proteins: list[Protein], args: argparse.Namespace) -> dict:
    """Warm-up, bare forward, analyze and memory of one loaded model (see `measure_model`)."""
    proteins, tokens = token_counts(adapter, proteins, args.max_length)
    max_tokens = int(args.max_tokens or default_max_tokens(adapter.device))
    batches = analyze_batches(tokens, max_tokens)
    out: dict = {
        "model": {"layers": adapter.n_layers, "heads": adapter.n_heads, "parameters": adapter.n_params,
                  "dtype": str(adapter.dtype).removeprefix("torch."), "architecture": adapter.architecture},
        "max_tokens": max_tokens, "n_batches": len(batches), "padded_tokens": padded_tokens(tokens, batches),
    }  # fmt: skip

    # Warm-up (untimed): CUDA context, cuBLAS handles and kernels, the adapter's worker thread.
    few = proteins[: args.warmup]
    run_bare(adapter, few, analyze_batches(tokens[: len(few)], max_tokens), args.max_length)
    run_analyze(adapter, few, args)

    def bare(label: str) -> tuple[int, float]:
        residues, seconds = timed(adapter.device, lambda: run_bare(adapter, proteins, batches, args.max_length))
        print(f"  bare forward ({label}): {len(proteins)} proteins in {len(batches)} batches of <= {max_tokens} "
              f"tokens: {seconds:.1f} s, {residues / seconds:,.0f} residues/s", flush=True)  # fmt: skip
        return residues, seconds

    # The bare pass runs before and after analyze and the faster run counts: the first pass over the batches
    # also pays first-use costs of new shapes (allocator growth, kernel choice) that analyze then finds paid.
    residues, before = bare("before analyze")
    n_properties = len(get_properties(PROPERTIES))
    print(f"  analyze: {len(proteins)} proteins, {n_properties} properties, null model, bootstrap", flush=True)
    full = run_analyze(adapter, proteins, args)
    full["residues_per_second"] = full["n_residues"] / full["seconds"]
    print(f"    {full['seconds']:.1f} s, {full['residues_per_second']:,.0f} residues/s", flush=True)
    _, after = bare("after analyze")
    seconds = min(before, after)
    out["bare"] = {"seconds": seconds, "seconds_before_after": [before, after], "n_residues": residues,
                   "residues_per_second": residues / seconds}  # fmt: skip
    out["analyze"] = full
    out["overhead"] = full["seconds"] / seconds
    print(f"  overhead analyze / bare: {out['overhead']:.3f}x", flush=True)
    out["same_work"] = check_same_work(out, residues)

    out["memory"] = measure_memory(adapter, proteins, full, args)
    out["seconds_for_paper_proteins"] = full["seconds"] * PAPER_PROTEINS / max(full["n_proteins"], 1)
    out["paper_study_seconds_if_all_like_this"] = PAPER_MODELS * out["seconds_for_paper_proteins"]
    return out


def check_same_work(out: dict, bare_residues: int) -> bool:
    """Whether analyze ran the bare pass's batches (count and padded tokens) over the same residues; warns if not
    (an out-of-memory split, or a change to analyze's batching that `analyze_batches` does not mirror)."""
    full = out["analyze"]
    mine = (out["n_batches"], out["padded_tokens"], bare_residues)
    theirs = (full["n_batches"], full["padded_tokens"], full["n_residues"])
    if mine != theirs:
        print(f"    warning: analyze ran (batches, padded tokens, residues) = {theirs} with "
              f"{full['oom_retries']} out-of-memory retries, the bare pass {mine}", flush=True)  # fmt: skip
    return mine == theirs


def measure_memory(adapter: ModelAdapter, proteins: list[Protein], full: dict, args: argparse.Namespace) -> dict:
    """Peak GPU memory of ``analyze`` over the first `args.memory_proteins` proteins against the full run's.

    Returns
    -------
    dict
        ``skipped`` (why) off CUDA; else per run the peaks, and ``ratio`` (full / small, of the peak
        allocated memory) and ``ratio_above_model`` (the same less the memory held before analyze).
    """
    if adapter.device.type != "cuda":
        reason = f"device is {adapter.device.type}, not CUDA: no GPU memory to measure"
        print(f"  memory: skipped ({reason})", flush=True)
        return {"skipped": reason}
    small_n = min(args.memory_proteins, len(proteins))
    print(f"  memory: analyze over the first {small_n} proteins", flush=True)
    small = run_analyze(adapter, proteins[:small_n], args)
    runs = {str(small["n_proteins"]): small["memory"], str(full["n_proteins"]): full["memory"]}
    a, b = full["memory"], small["memory"]
    out = {
        "runs": runs,
        "ratio": a["peak_allocated_gib"] / b["peak_allocated_gib"],
        "ratio_above_model": (a["peak_allocated_gib"] - a["allocated_before_gib"])
        / max(b["peak_allocated_gib"] - b["allocated_before_gib"], 1e-9),
    }
    print(f"    peak {b['peak_allocated_gib']:.2f} GiB ({small['n_proteins']} proteins), "
          f"{a['peak_allocated_gib']:.2f} GiB ({full['n_proteins']}): ratio {out['ratio']:.3f}",
          flush=True)  # fmt: skip
    return out


# -- report --------------------------------------------------------------------------------------------


def environment(device: torch.device, args: argparse.Namespace) -> dict:
    """The machine, the software and the command line, printed and returned for the JSON."""
    env: dict = {
        "command": shlex.join(sys.orig_argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "source": args.source,
        "properties": [p.name for p in get_properties(PROPERTIES)],
        "smoke": args.smoke,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["device_name"] = props.name
        env["cuda_device"] = {
            "name": props.name, "capability": f"{props.major}.{props.minor}",
            "total_memory_gib": props.total_memory / GIB, "multi_processor_count": props.multi_processor_count,
            "properties": str(props), "cudnn": torch.backends.cudnn.version(),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }  # fmt: skip
    else:
        env["device_name"] = env["cpu"]
    print(f"command: {env['command']}")
    print(f"device: {device} ({env['device_name']}); torch {env['torch']} (CUDA {env['cuda']}), "
          f"transformers {env['transformers']}, python {env['python']}")  # fmt: skip
    if device.type == "cuda":
        print(f"CUDA device properties: {env['cuda_device']['properties']}")
    print(f"CPU: {env['cpu']}, {env['torch_threads']} torch threads")
    return env


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def projection(models: dict[str, dict]) -> dict:
    """The paper's study (5 models x 5,000 proteins x every property), from the slower shape measured."""
    slower = max(models, key=lambda name: models[name]["seconds_for_paper_proteins"])
    return {
        "models": PAPER_MODELS,
        "proteins": PAPER_PROTEINS,
        "slower_shape": slower,
        "seconds": PAPER_MODELS * models[slower]["seconds_for_paper_proteins"],
        "seconds_per_shape": {name: m["paper_study_seconds_if_all_like_this"] for name, m in models.items()},
    }


def print_table(out: dict) -> None:
    """The figures as a small table, one column per model, then the projection."""
    models: dict[str, dict] = out["models"]
    small = out["settings"]["memory_proteins"]

    def peak(m: dict, which: int) -> str:
        runs = m["memory"].get("runs")
        return f"{list(runs.values())[which]['peak_allocated_gib']:.2f} GiB" if runs else "skipped"

    def ratio(m: dict, key: str) -> str:
        return f"{m['memory'][key]:.3f}x" if key in m["memory"] else "skipped"

    rows: list[tuple[str, Callable[[dict], str], str]] = [
        ("parameters", lambda m: f"{m['model']['parameters'] / 1e6:.1f}M", ""),
        ("proteins", lambda m: f"{m['analyze']['n_proteins']:,}", ""),
        ("residues", lambda m: f"{m['analyze']['n_residues']:,}", ""),
        ("batches", lambda m: f"{m['n_batches']:,}", ""),
        ("max tokens per batch", lambda m: f"{m['max_tokens']:,}", ""),
        ("bare forward, residues/s", lambda m: f"{m['bare']['residues_per_second']:,.0f}", ""),
        ("analyze, residues/s", lambda m: f"{m['analyze']['residues_per_second']:,.0f}", ""),
        ("overhead analyze / bare", lambda m: f"{m['overhead']:.3f}x", f"<= {OVERHEAD_TARGET}"),
        (f"GPU peak, first {small} proteins", lambda m: peak(m, 0), ""),
        ("GPU peak, all proteins", lambda m: peak(m, 1), ""),
        ("GPU peak ratio, all / first", lambda m: ratio(m, "ratio"), "flat (~1.00)"),
        ("  the same, less memory held before", lambda m: ratio(m, "ratio_above_model"), ""),
        (f"analyze s for {PAPER_PROTEINS:,} proteins", lambda m: f"{m['seconds_for_paper_proteins']:,.1f}", ""),
        (f"{PAPER_MODELS} such models, s", lambda m: f"{m['paper_study_seconds_if_all_like_this']:,.1f}", ""),
    ]
    print()
    print(f"{'figure':<40}" + "".join(f"{name:>14}" for name in models) + "  target")
    for label, value, target in rows:
        print(f"{label:<40}" + "".join(f"{value(m):>14}" for m in models.values()) + f"  {target}".rstrip())
    p = out["projection"]
    print(f"\nprojected paper study ({PAPER_MODELS} models x {PAPER_PROTEINS:,} proteins x every property): "
          f"{p['seconds']:,.0f} s = {p['seconds'] / 3600:.2f} h on this device, {PAPER_MODELS} x the slower "
          f"shape ({p['slower_shape']}).")  # fmt: skip
    print(
        "ProtBert-shaped is the largest of the paper's five models by parameters (TAPE BERT, ProtBert, "
        "ProtBert-BFD, ProtAlbert, ProtXLNet); ESM-2 650M is outside the paper and larger: an upper bound."
    )
    n = out["settings"]["proteins"]
    if n != PAPER_PROTEINS:
        print(f"(times for {PAPER_PROTEINS:,} proteins are scaled linearly from the {n:,} proteins run)")
    if out["environment"]["smoke"]:
        print("(--smoke: tiny shapes and few proteins; these numbers check the script, they measure nothing)")


# -- main ----------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """Command-line options; ``--smoke`` shrinks the models and the defaults of the sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=SOURCE, help=f"protein source (default {SOURCE})")
    parser.add_argument("--proteins", type=int, help="proteins timed (default 5000; 30 with --smoke)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:1, cpu, ...")
    parser.add_argument("--dtype", default="bfloat16", help="model dtype: bfloat16, float16, float32 or auto")
    parser.add_argument("--max-tokens", type=int, help="padded tokens per batch (default: analyze's for the device)")
    parser.add_argument("--max-length", type=int, default=512, help="token limit per protein (default 512)")
    parser.add_argument("--warmup", type=int, help="proteins of the untimed warm-up (default 20; 5 with --smoke)")
    parser.add_argument("--memory-proteins", type=int, help="the smaller memory run (default 500; 10 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and 30 proteins: checks the script")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown or not args.models:
        parser.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    args.proteins = args.proteins or (30 if args.smoke else PAPER_PROTEINS)
    args.warmup = args.warmup or (5 if args.smoke else 20)
    args.memory_proteins = args.memory_proteins or (10 if args.smoke else 500)
    return args


def main() -> None:
    args = parse_args()
    warnings.simplefilter("ignore")  # truncation and model-loading chatter
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # saving and loading shards would draw progress bars
    check_source(args.source)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        sys.exit(f"gpu_benchmark: {error}")
    out: dict = {"environment": environment(device, args)}
    out["settings"] = {key: getattr(args, key) for key in ("proteins", "models", "dtype", "max_tokens", "max_length",
                                                           "warmup", "memory_proteins")}  # fmt: skip

    start = time.perf_counter()
    proteins = read_proteins(args.source, args.proteins)
    residues = sum(len(p) for p in proteins)
    print(f"read {len(proteins)} proteins ({residues:,} residues) from {args.source} in "
          f"{time.perf_counter() - start:.0f} s (not timed)", flush=True)  # fmt: skip
    if not proteins:
        sys.exit(f"gpu_benchmark: no readable proteins in {args.source}")

    out["models"] = {name: measure_model(name, proteins, args, device) for name in args.models}
    out["projection"] = projection(out["models"])
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
