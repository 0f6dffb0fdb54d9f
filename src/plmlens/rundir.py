"""The layout of a run directory, in one place.

``plmlens analyze --out RUN_DIR`` writes a run directory; ``probe``, ``ablate``, ``jacobian`` and ``report``
add their outputs to it (``RUN_DIR/probe/``, ``RUN_DIR`` or ``RUN_DIR/ablation/``, ...), and ``compare``,
``merge``, the CLI and the benchmarks read it. `RunDir` is the only code that knows the file names, how an
older run's files differ (its defaults are written here once), and what a damaged file is: every reader
goes through it and every command writes the files its `OutputKind` names.

::

    from plmlens.rundir import RunDir

    run = RunDir("runs/antiberty")
    run.summary()["threshold"], run.heads().head(), run.probes()

A new kind of output (for example features) registers itself with `register_output_kind`: its files, its
record, and where it sits in a run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from plmlens.ioutils import write_text_atomic
from plmlens.outputs import OutputSet

SUMMARY = "summary.json"
HEADS = "heads.csv"
LAYERS = "layers.csv"
AMINO_ACIDS = "amino_acids.csv"
ACCUMULATOR = "accumulator.npz"
SHARD_RECORD = "shard.json"
PROBES = "probes.csv"
CONTACT_REGRESSION = "contact_regression.csv"

#: The files a comparison needs; without them a directory is not an analyze output.
ANALYSIS_FILES = (SUMMARY, HEADS, LAYERS)
#: Columns of heads.csv every reader relies on.
HEAD_KEY_COLUMNS = ("property", "layer", "head", "proportion")

#: What a summary.json of an older run may lack, and what it then means. Written once, here.
SUMMARY_DEFAULTS: dict[str, Any] = {"support": "full", "alpha": 0.05, "model": {}, "backgrounds": {},
                                    "centres_of_gravity": {}, "top_heads": {}}  # fmt: skip


class RunDirError(ValueError):
    """A directory that is not the run it should be, or one of its files damaged; the message is one line
    naming the path."""


@dataclass(frozen=True)
class OutputKind:
    """One kind of output that can sit in a run directory.

    Parameters
    ----------
    name : str
        ``analysis``, ``probe``, ``ablation``, ...
    outputs : OutputSet
        Its files and its record (the file that marks it finished).
    places : tuple of str
        Where it is looked for, relative to the run directory (``""`` is the run directory itself), in order.
    """

    name: str
    outputs: OutputSet
    places: tuple[str, ...] = ("",)


OUTPUT_KINDS: dict[str, OutputKind] = {}


def register_output_kind(kind: OutputKind) -> OutputKind:
    """Make a kind of output known to `RunDir` (`RunDir.find` locates it, `RunDir.kinds` lists it)."""
    OUTPUT_KINDS[kind.name] = kind
    return kind


#: ``plmlens analyze``: the statistics; ``summary.json`` marks a finished run. Figures and a report drawn
#: from an earlier run are stale once it is replaced.
ANALYSIS = register_output_kind(OutputKind("analysis", OutputSet(
    (HEADS, LAYERS, AMINO_ACIDS, ACCUMULATOR, SUMMARY), record=SUMMARY, stale=("report.html", "figures"))))  # fmt: skip
#: ``plmlens analyze --shard i/K``: a shard's sums; ``shard.json`` marks a finished shard.
SHARD = register_output_kind(OutputKind("shard", OutputSet((ACCUMULATOR, SHARD_RECORD), record=SHARD_RECORD)))
#: ``plmlens probe --out RUN_DIR/probe``.
PROBE = register_output_kind(
    OutputKind("probe", OutputSet((PROBES, CONTACT_REGRESSION, SUMMARY), record=SUMMARY), ("probe",))
)
#: ``plmlens ablate --out RUN_DIR`` (or ``RUN_DIR/ablation``).
ABLATION = register_output_kind(OutputKind("ablation", OutputSet(
    ("ablation.csv", "ablation.png", "ablation.svg", "ablation.json"), record="ablation.json"),
    ("", "ablation")))  # fmt: skip
#: ``plmlens jacobian --out RUN_DIR`` (or ``RUN_DIR/jacobian``).
JACOBIAN = register_output_kind(OutputKind("jacobian", OutputSet(
    ("jacobian.csv", "jacobian_summary.csv", "jacobian_maps.npz", "jacobian.png", "jacobian.svg", "jacobian.json"),
    record="jacobian.json"), ("", "jacobian")))  # fmt: skip
#: ``plmlens report``: ``report.html`` marks a finished report.
REPORT = register_output_kind(OutputKind("report", OutputSet(("report.html", "figures"), record="report.html")))


def with_defaults(summary: dict) -> dict:
    """`summary` with `SUMMARY_DEFAULTS` filled in where an older run left a key out (or wrote null)."""
    filled = dict(summary)
    for key, default in SUMMARY_DEFAULTS.items():
        if filled.get(key) is None:
            filled[key] = default.copy() if isinstance(default, dict) else default
    return filled


class RunDir:
    """A run directory: the one reader and writer of its files.

    Reads are checked and cached: a missing or damaged file raises `RunDirError` with one line naming it.

    Parameters
    ----------
    path : path
        The directory ``plmlens analyze --out`` wrote (or will write).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """``RUN_DIR/name``."""
        return self.path / name

    # -- analysis ---------------------------------------------------------------------------------------------

    def is_analysis(self) -> bool:
        """Whether the directory holds a finished analyze run (its record exists)."""
        return self.file(SUMMARY).is_file()

    def check(self) -> RunDir:
        """Refuse a directory that is not a finished analyze run; returns self.

        Raises
        ------
        RunDirError
            Not a directory, or one of `ANALYSIS_FILES` missing.
        """
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: not a directory (expected a `plmlens analyze` output)")
        missing = [name for name in ANALYSIS_FILES if not self.file(name).is_file()]
        if missing:
            raise RunDirError(f"{self.path}: not a `plmlens analyze` output (no {', '.join(missing)})")
        return self

    def summary(self) -> dict:
        """``summary.json``, with `SUMMARY_DEFAULTS` for what an older run left out.

        Raises
        ------
        RunDirError
            Missing, unreadable, or not the summary of an analyze run (no threshold, model not a record).
        """
        if "summary" not in self._cache:
            path = self.file(SUMMARY)
            summary = read_json(path)
            if not isinstance(summary, dict) or "threshold" not in summary:
                raise RunDirError(f"{path}: not an analyze summary (no threshold)")
            if summary.get("model") is not None and not isinstance(summary["model"], dict):
                raise RunDirError(f"{path}: not an analyze summary (model is not a record)")
            self._cache["summary"] = with_defaults(summary)
        return self._cache["summary"]

    def raw_summary(self) -> dict:
        """``summary.json`` as written (no defaults), for code that carries it into a new run."""
        return read_json(self.file(SUMMARY))

    def heads(self) -> pd.DataFrame:
        """``heads.csv``: one row per property, layer and head (1-based)."""
        if "heads" not in self._cache:
            heads = self._table(HEADS)
            missing = sorted(set(HEAD_KEY_COLUMNS) - set(heads.columns))
            if missing:
                raise RunDirError(f"{self.path}: damaged {HEADS} (no column {', '.join(missing)})")
            self._cache["heads"] = heads
        return self._cache["heads"]

    def layers(self) -> pd.DataFrame:
        """``layers.csv``: one row per property and layer."""
        return self._cached_table(LAYERS)

    def amino_acids(self) -> pd.DataFrame:
        """``amino_acids.csv``: per amino acid its top head and the null model's."""
        return self._cached_table(AMINO_ACIDS)

    def shape(self) -> tuple[int, int]:
        """The model's layers and heads: from the summary, else the largest numbers in ``heads.csv``."""
        model, heads = self.summary()["model"], self.heads()
        return int(model.get("layers") or heads["layer"].max()), int(model.get("heads") or heads["head"].max())

    def finished_fingerprint(self, shard: bool = False) -> dict | None:
        """The fingerprint of the finished run (or shard) here, or None when there is none or it is unreadable."""
        try:
            record = json.loads(self.file(SHARD_RECORD if shard else SUMMARY).read_text())
        except (OSError, ValueError, RecursionError):
            return None
        info = record.get("info", record) if isinstance(record, dict) else None
        return info.get("fingerprint") if isinstance(info, dict) else None

    def checkpoint(self, rank: int = 0, world_size: int = 1) -> Path:
        """The run's checkpoint file; one per rank under torchrun."""
        return self.file("checkpoint.npz" if world_size == 1 else f"checkpoint.rank{rank}-of-{world_size}.npz")

    def accumulator_path(self) -> Path:
        """``accumulator.npz``: the raw sums every statistic is computed from."""
        return self.file(ACCUMULATOR)

    # -- other kinds of output ------------------------------------------------------------------------------

    def find(self, kind: str, name: str | None = None) -> Path | None:
        """The directory where `kind`'s output (or its file `name`, default its record) is, or None.

        ``plmlens ablate --out RUN_DIR`` and ``--out RUN_DIR/ablation`` are both found, in the order of
        `OutputKind.places`.
        """
        spec = OUTPUT_KINDS[kind]
        name = name or spec.outputs.record
        for place in spec.places:
            directory = self.path / place if place else self.path
            if (directory / name).is_file():
                return directory
        return None

    def probes(self) -> pd.DataFrame | None:
        """``probe/probes.csv`` when ``plmlens probe`` wrote it."""
        return self._optional_table("probe", PROBES)

    def contact_regression(self) -> pd.DataFrame | None:
        """``probe/contact_regression.csv`` when ``plmlens probe`` wrote it."""
        return self._optional_table("probe", CONTACT_REGRESSION)

    def ablation(self) -> tuple[pd.DataFrame, dict, Path] | None:
        """``ablation.csv``, ``ablation.json`` and their directory, when ``plmlens ablate`` wrote them here."""
        directory = self.find("ablation", "ablation.csv")
        if directory is None:
            return None
        return read_table(directory / "ablation.csv"), read_json(directory / "ablation.json"), directory

    def jacobian(self) -> tuple[pd.DataFrame, dict, Path] | None:
        """``jacobian_summary.csv``, ``jacobian.json`` and their directory, when ``plmlens jacobian`` wrote
        them here."""
        directory = self.find("jacobian", "jacobian_summary.csv")
        if directory is None:
            return None
        return read_table(directory / "jacobian_summary.csv"), read_json(directory / "jacobian.json"), directory

    # -- writing ----------------------------------------------------------------------------------------------

    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        """Write ``RUN_DIR/name`` as CSV (no index), atomically."""
        self._cache.pop(name.removesuffix(".csv"), None)
        return write_text_atomic(self.file(name), frame.to_csv(index=False))

    def write_json(self, name: str, record: Any, **dumps: Any) -> Path:
        """Write ``RUN_DIR/name`` as indented JSON with a final newline, atomically."""
        self._cache.pop(name.removesuffix(".json"), None)
        return write_text_atomic(self.file(name), json.dumps(record, indent=2, **dumps) + "\n")

    # -- helpers ----------------------------------------------------------------------------------------------

    def _table(self, name: str) -> pd.DataFrame:
        try:
            return pd.read_csv(self.file(name))
        except (ValueError, KeyError) as error:  # pandas' parser errors are ValueErrors
            raise RunDirError(f"{self.path}: damaged {name} ({type(error).__name__}: {error})") from None
        except OSError as error:
            raise RunDirError(f"{self.file(name)}: unreadable ({error.strerror or type(error).__name__})") from None

    def _cached_table(self, name: str) -> pd.DataFrame:
        key = name.removesuffix(".csv")
        if key not in self._cache:
            self._cache[key] = self._table(name)
        return self._cache[key]

    def _optional_table(self, kind: str, name: str) -> pd.DataFrame | None:
        directory = self.find(kind, name)
        return read_table(directory / name) if directory is not None else None


def read_json(path: Path) -> Any:
    """A JSON file, or `RunDirError` naming it when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing") from None
    except (OSError, ValueError, RecursionError) as error:  # JSON, UTF-8, or nesting past the stack
        raise RunDirError(f"{path}: unreadable ({type(error).__name__})") from None


def read_table(path: Path) -> pd.DataFrame:
    """A CSV file, or `RunDirError` naming it when it is damaged."""
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, KeyError) as error:
        raise RunDirError(f"{path}: damaged ({type(error).__name__}: {error})") from None


# -- features (sparse autoencoders) ---------------------------------------------------------------------------

#: Where a run directory's SAEs sit: ``RUN_DIR/features/NAME/`` (one per model layer or setting).
FEATURES_PLACE = "features"
SAE_WEIGHTS = "sae.safetensors"
SAE_RECORD = "sae.json"
SAE_EVALUATION = "evaluation.json"
CONCEPTS_PLACE = "concepts"
FEATURES_TABLE = "features.csv"
CONCEPTS_TABLE = "concepts.csv"
FEATURE_EXAMPLES = "examples.json"

#: ``plmlens features train --out SAE_DIR``: the SAE; ``sae.json`` marks it finished. Its concepts are stale
#: once it is replaced.
SAE = register_output_kind(OutputKind("sae", OutputSet(
    (SAE_WEIGHTS, SAE_RECORD, SAE_EVALUATION), record=SAE_RECORD, stale=(CONCEPTS_PLACE,))))  # fmt: skip
#: ``plmlens features concepts SAE_DIR``: ``SAE_DIR/concepts/``; its ``summary.json`` marks it finished.
CONCEPTS = register_output_kind(OutputKind("concepts", OutputSet(
    (FEATURES_TABLE, CONCEPTS_TABLE, FEATURE_EXAMPLES, SUMMARY), record=SUMMARY), (CONCEPTS_PLACE,)))  # fmt: skip


class FeatureDir:
    """An SAE directory (``plmlens features train --out SAE_DIR``) and its concepts (``SAE_DIR/concepts/``):
    the one reader of their records and tables.

    ::

        SAE_DIR/sae.safetensors, sae.json        the SAE (config, model, layer, training record)
        SAE_DIR/evaluation.json                  variance explained, L0, dead/dense latents, fidelity
        SAE_DIR/concepts/features.csv            per feature: frequency, best concept, F1, threshold
        SAE_DIR/concepts/concepts.csv            per concept: best features, F1, neurons and controls
        SAE_DIR/concepts/examples.json           top-activating proteins of the browsed features
        SAE_DIR/concepts/summary.json            coverage counts, settings; marks the concepts finished

    Parameters
    ----------
    path : path
        SAE_DIR.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"FeatureDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    def is_sae(self) -> bool:
        """Whether a finished SAE is here."""
        return (self.path / SAE_RECORD).is_file()

    def has_concepts(self) -> bool:
        """Whether finished concepts are here."""
        return (self.path / CONCEPTS_PLACE / SUMMARY).is_file()

    def sae_record(self) -> dict:
        """``sae.json``: the SAE's ``config`` and, beside it, where it came from (``model``, ``layer``,
        ``training``: the metadata `plmlens.features.sae.save_sae` stores)."""
        record = self._json(self.path / SAE_RECORD, "sae")
        metadata = record.get("metadata")
        return {**metadata, **record} if isinstance(metadata, dict) else record

    def evaluation(self) -> dict | None:
        """``evaluation.json`` when the SAE was evaluated (variance explained, L0, fidelity)."""
        path = self.path / SAE_EVALUATION
        return self._json(path, "evaluation") if path.is_file() else None

    def concepts_summary(self) -> dict:
        """``concepts/summary.json``."""
        return self._json(self.path / CONCEPTS_PLACE / SUMMARY, "concepts_summary")

    def features_table(self) -> pd.DataFrame:
        """``concepts/features.csv``: one row per feature."""
        return self._table(FEATURES_TABLE)

    def concepts_table(self) -> pd.DataFrame:
        """``concepts/concepts.csv``: one row per concept."""
        return self._table(CONCEPTS_TABLE)

    def examples(self) -> dict:
        """``concepts/examples.json``: the browsed features and their top-activating proteins."""
        return self._json(self.path / CONCEPTS_PLACE / FEATURE_EXAMPLES, "examples")

    def _json(self, path: Path, key: str) -> dict:
        if key not in self._cache:
            record = read_json(path)
            if not isinstance(record, dict):
                raise RunDirError(f"{path}: damaged (not a record)")
            self._cache[key] = record
        return self._cache[key]

    def _table(self, name: str) -> pd.DataFrame:
        if name not in self._cache:
            self._cache[name] = read_table(self.path / CONCEPTS_PLACE / name)
        return self._cache[name]


def feature_dirs(run_dir: str | Path) -> list[FeatureDir]:
    """The SAEs of a run directory (``RUN_DIR/features/*/sae.json``), by name."""
    root = Path(run_dir) / FEATURES_PLACE
    if not root.is_dir():
        return []
    return [FeatureDir(path) for path in sorted(root.iterdir()) if (path / SAE_RECORD).is_file()]
