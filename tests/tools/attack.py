"""Issue 22's attack list, run against the plmlens command line: one verdict per attack.

Every attack of the issue (stored script injection in the HTML reports, resume over swapped data, the
Jacobian mixing up proteins that share an id, damaged checkpoints and protein sets, outputs overwritten or
half-written, memory blow-ups, things the console was not told, fuzzed inputs) is reproduced in its own
temporary directory through ``python -m plmlens`` subprocesses with timeouts, and judged from the outside:
exit code, stderr, the files left behind, and for HTML pages the DOM that headless Chromium dumps.

Usage::

    python tests/tools/attack.py [--quick] [--keep DIR] [--src PATH] [--jobs N] [--only ID ...] [--timings]

prints one line per attack, ``HELD  <id> <description>: <evidence>`` or ``FAILED <id> ...: <evidence>``,
then the count, and exits 1 when an attack failed. ``--src`` names the source root put first on
``PYTHONPATH`` (default: this checkout's ``src``), so that the same attacks run against an older
checkout (``git worktree add /tmp/old COMMIT`` then ``--src /tmp/old/src``). ``--quick`` runs the subset
``tests/test_attacks.py`` runs in CI (the injections and the output and lock attacks). A traceback in
stderr fails every attack that expects a one-line error.

Heavy lifting uses tiny local models (``tests/scale_fixtures.py``); the report injection through a file
name uses the real ``sapiens-heavy`` (from its wheel) on a real antibody structure, as the issue did.
Some attacks need root (a tmpfs for a full disk) and the user ``nobody`` (unwritable and unreadable
folders), as in the issue's environment; without them they fail, naming what is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
SHARED_DATA = Path(os.environ.get("PLMLENS_SHARED_DATA", REPO.parent / "shared" / "data"))
#: A real antibody Fab (chains H and L) for the injection through a file name.
ANTIBODY_PDB = SHARED_DATA / "antibodies" / "piercelab_bm5.5" / "1AHW_r_u.pdb"
#: Markup that marks the page when it runs: an ``<img>`` whose error handler sets ``data-pwned`` on <body>.
HOSTILE = "<img src=x onerror=document.body.dataset.pwned=1>"
#: Opens an HTML comment inside a <script> (the "double escaped" state): it swallows the page's next </script>.
SCRIPT_BREAKER = "<!--<script>"
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: Address-space limit of the memory attacks (bytes), as ``prlimit --as``.
MEMORY_LIMIT = 4_000_000_000
#: The per-residue arrays of a protein set and the dtypes plmlens writes them with.
SET_ARRAYS = {"residue_numbers": np.int64, "insertion_codes": "<U1", "ca": np.float32, "cb": np.float32,
              "has_coords": bool, "binding_site": bool, "ptm": bool}  # fmt: skip
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class SetupError(RuntimeError):
    """An input an attack needs could not be built (missing data, a fixture run that failed)."""


# --------------------------------------------------------------------------------------------------
# Verdicts and the attack registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Whether plmlens held against an attack, and what shows it."""

    held: bool
    evidence: str


def held(evidence: str) -> Verdict:
    return Verdict(True, evidence)


def failed(evidence: str) -> Verdict:
    return Verdict(False, evidence)


@dataclass(frozen=True)
class Attack:
    """One attack of the issue: `run(lab, workdir)` reproduces it and judges the outcome."""

    id: str
    description: str
    run: Callable[[Lab, Path], Verdict]
    quick: bool = False


@dataclass(frozen=True)
class Result:
    """An attack's verdict and how long it took."""

    attack: Attack
    verdict: Verdict
    seconds: float

    def line(self) -> str:
        """The line printed for it: ``HELD  id description: evidence`` or ``FAILED id ...``."""
        word = "HELD" if self.verdict.held else "FAILED"
        return f"{word:<5} {self.attack.id} {self.attack.description}: {one_line(self.verdict.evidence)}"


ATTACKS: list[Attack] = []


def attack(attack_id: str, description: str, *, quick: bool = False) -> Callable:
    """Register the decorated function as an attack (in the order of definition)."""

    def register(function: Callable[[Lab, Path], Verdict]) -> Callable[[Lab, Path], Verdict]:
        ATTACKS.append(Attack(attack_id, description, function, quick))
        return function

    return register


def one_line(text: str, limit: int = 220) -> str:
    """Text as one printable line: control characters escaped, whitespace collapsed, at most `limit` long."""
    text = CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text).replace("\n", " "))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------------
# Running plmlens
# --------------------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A finished command: exit code (None when it ran past its timeout), output and duration."""

    args: list[str]
    rc: int | None
    out_bytes: bytes
    err_bytes: bytes
    seconds: float

    @property
    def out(self) -> str:
        return self.out_bytes.decode("utf-8", "backslashreplace")

    @property
    def err(self) -> str:
        return self.err_bytes.decode("utf-8", "backslashreplace")

    @property
    def text(self) -> str:
        """stdout and stderr together."""
        return self.out + "\n" + self.err

    def traceback(self) -> str | None:
        """The exception line of the first traceback in stderr, or None."""
        lines = self.err.splitlines()
        for k, line in enumerate(lines):
            if line.startswith("Traceback"):
                tail = [rest for rest in lines[k + 1 :] if rest.strip() and not rest.startswith((" ", "\t", "^"))]
                return tail[0] if tail else line
        return None

    def error_lines(self) -> list[str]:
        """Lines that start with ``error:`` (how the CLI reports a failure)."""
        return [line for line in self.text.splitlines() if line.startswith("error:")]

    def ran_model(self) -> bool:
        """Whether the command got as far as running a model (its start line or throughput line)."""
        return any(re.match(r"(analyze|probe|jacobian|ablate): ", line) or "residues/s" in line
                   for line in self.text.splitlines())  # fmt: skip

    def last_line(self) -> str:
        lines = [line for line in self.err.splitlines() if line.strip()] or [""]
        return lines[-1]


def crash(proc: Proc) -> str | None:
    """How a command crashed (timeout, signal, traceback), or None."""
    if proc.rc is None:
        return f"still running after {proc.seconds:.0f} s (killed)"
    if proc.rc < 0:
        return f"killed by signal {signal.Signals(-proc.rc).name}: {proc.last_line()}"
    found = proc.traceback()
    return f"traceback: {found}" if found else None


def refused(proc: Proc, *needles: str, before_model: bool = False, code: int | None = None) -> Verdict:
    """The verdict for a command that must stop with one ``error:`` line (containing `needles`) and no
    traceback; `before_model`: before any model ran; `code`: with that exit code."""
    problem = crash(proc)
    if problem:
        return failed(problem)
    if proc.rc == 0:
        return failed(f"exit 0, no error: {proc.last_line()}")
    errors = proc.error_lines()
    if len(errors) != 1:
        return failed(f"exit {proc.rc} with {len(errors)} error lines: {proc.last_line()}")
    missing = [needle for needle in needles if needle not in errors[0]]
    if missing:
        return failed(f"the error does not name {missing[0]!r}: {errors[0]}")
    if code is not None and proc.rc != code:
        return failed(f"exit {proc.rc}, not {code}: {errors[0]}")
    if before_model and proc.ran_model():
        return failed(f"the model ran before the error: {errors[0]}")
    return held(f"exit {proc.rc} in {proc.seconds:.1f} s: {errors[0]}")


class Running:
    """A command started in the background; `finish` waits for it (and kills it past its timeout)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], prefix: Sequence[str] = ()) -> None:
        self.args = args
        self.started = time.monotonic()
        logs = Path(tempfile.mkdtemp(prefix="log-", dir=cwd))
        self.out_path, self.err_path = logs / "stdout", logs / "stderr"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen([*prefix, *args], cwd=cwd, env=env, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        return self.err_path.read_bytes().decode("utf-8", "backslashreplace")

    def signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(number)

    def wait_for(self, condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
        """Poll `condition` until it holds (True) or the command ends or `timeout` passes (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            if not self.alive():
                return condition()
            time.sleep(interval)
        return False

    def finish(self, timeout: float) -> Proc:
        remaining = max(0.1, timeout - (time.monotonic() - self.started))
        try:
            rc: int | None = self.popen.wait(remaining)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)  # its own session: only what we started
            self.popen.wait()
            rc = None
        return Proc(self.args, rc, self.out_path.read_bytes(), self.err_path.read_bytes(),
                    time.monotonic() - self.started)  # fmt: skip


@dataclass
class Lab:
    """Where the attacks run: the plmlens under test (`src`), a work root, and the inputs they share."""

    src: Path
    root: Path
    python: str = sys.executable
    threads: int = 1
    _fixtures: dict[str, Any] = field(default_factory=dict)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def env(self) -> dict[str, str]:
        home = self.root / "home"
        return {
            **os.environ, "PYTHONPATH": str(self.src), "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HOME": str(home), "HF_HOME": str(home / "hf"),
            "MPLCONFIGDIR": str(home / "mpl"), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "250", "TERM": "dumb",
        }  # fmt: skip

    def start(self, args: Sequence[object], cwd: Path, *, user: str | None = None,
              memory: int | None = None) -> Running:  # fmt: skip
        """Start ``python -m plmlens ARGS`` (as `user`, under an address-space limit of `memory` bytes)."""
        prefix: list[str] = []
        if memory is not None:
            prefix += ["prlimit", f"--as={memory}", "--"]
        if user is not None:
            prefix += ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"]
        return Running([self.python, "-m", "plmlens", *map(str, args)], cwd, self.env(), prefix)

    def plmlens(self, args: Sequence[object], cwd: Path, *, timeout: float = 120, user: str | None = None,
                memory: int | None = None) -> Proc:  # fmt: skip
        """Run ``python -m plmlens ARGS`` to its end (or `timeout`)."""
        return self.start(args, cwd, user=user, memory=memory).finish(timeout)

    def fixture(self, name: str, build: Callable[[Path], Any]) -> Any:
        """What `build(root/fixtures/name)` returns, built once for all attacks (a failure is remembered)."""
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._fixtures:
                directory = self.root / "fixtures" / name
                directory.mkdir(parents=True, exist_ok=True)
                try:
                    self._fixtures[name] = build(directory)
                except SetupError as error:
                    self._fixtures[name] = error
            value = self._fixtures[name]
        if isinstance(value, SetupError):
            raise SetupError(f"fixture {name}: {value}")
        return value


def check_imported(lab: Lab) -> str:
    """The plmlens module the subprocesses import; it must come from `lab.src`."""
    code = "import plmlens; print(plmlens.__file__)"
    done = subprocess.run([lab.python, "-c", code], env=lab.env(), capture_output=True, text=True, timeout=60)
    path = done.stdout.strip()
    if done.returncode != 0 or not Path(path).resolve().is_relative_to(lab.src.resolve()):
        raise SystemExit(f"attack.py: plmlens is imported from {path or done.stderr.strip()!r}, not {lab.src}")
    return path


# --------------------------------------------------------------------------------------------------
# Inputs: tiny models, synthetic structures, FASTA files, protein sets, damaged archives
# --------------------------------------------------------------------------------------------------


def _fixtures_module() -> Any:
    """tests/scale_fixtures.py (imports torch; loaded only when a model or structure is built)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import transformers

    import scale_fixtures

    transformers.utils.logging.disable_progress_bar()  # save_pretrained's bar on our stderr
    return scale_fixtures


def bert(lab: Lab) -> Path:
    """A tiny random BERT with its masked-LM head (ProtBert's vocabulary; at most 254 residues)."""

    def build(directory: Path) -> Path:
        _fixtures_module().tiny_bert(directory, lm_head=True)
        for path in directory.iterdir():  # save_pretrained writes the weights 0600: nobody must read them
            path.chmod(0o644)
        return directory

    return lab.fixture("bert", build)


def pdb_text(length: int, seed: int, chain: str = "A") -> str:
    """A synthetic PDB chain of `length` residues along a random walk."""
    fixtures = _fixtures_module()
    rng = np.random.default_rng(seed)
    builder = fixtures.PdbBuilder()
    letters = list(fixtures.THREE)
    for i, xyz in enumerate(fixtures.random_walk(length, rng)):
        builder.residue(fixtures.THREE[letters[rng.integers(20)]], chain, i + 1, xyz)
    return builder.text()


def structures(lab: Lab) -> Path:
    """Six synthetic single-chain PDB files (30-40 residues) and one too short to read."""
    return lab.fixture("structures", lambda d: _fixtures_module().synthetic_structures(d, 6, 0, 30, 40))


def random_sequences(n: int, seed: int, low: int = 60, high: int = 100) -> list[str]:
    """`n` random sequences of the 20 amino acids, of `low` to `high` residues."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(AMINO_ACIDS.encode(), dtype=np.uint8)
    lengths = rng.integers(low, high + 1, size=n)
    return [letters[rng.integers(0, 20, size=int(length))].tobytes().decode() for length in lengths]


def write_fasta(path: Path, sequences: Sequence[str], prefix: str = "p") -> Path:
    path.write_text("".join(f">{prefix}{k}\n{sequence}\n" for k, sequence in enumerate(sequences)))
    return path


def same_shape_sequences(sequences: Sequence[str], seed: int) -> list[str]:
    """Other sequences of exactly the same lengths (what a swapped data file holds)."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(AMINO_ACIDS.encode(), dtype=np.uint8)
    return [letters[rng.integers(0, 20, size=len(sequence))].tobytes().decode() for sequence in sequences]


def fasta(lab: Lab) -> Path:
    """120 random sequences of 60-100 residues: a run of a few seconds with the tiny BERT."""
    return lab.fixture("fasta", lambda d: write_fasta(d / "proteins.fasta", random_sequences(120, 1)))


@dataclass
class SetRecord:
    """One protein of a hand-written protein set (coordinates: a random walk, or none)."""

    id: Any
    sequence: Any
    coords: bool = True
    seed: int = 0


def protein_set_members(records: Sequence[SetRecord]) -> dict[str, Any]:
    """The members of a protein set (``__index__`` and per-residue arrays) as plmlens writes them, without a
    checksum (sets written before checksums existed are still read)."""
    entries, columns = [], {name: [] for name in SET_ARRAYS}
    for record in records:
        n = len(record.sequence)
        entries.append({"id": record.id, "sequence": record.sequence, "source": "attack.pdb", "chain": "A",
                        "dssp": None, "binding_site": False, "ptm": False, "meta": {}})  # fmt: skip
        ca = _fixtures_module().random_walk(n, np.random.default_rng(record.seed)) if record.coords else None
        ca = np.full((n, 3), np.nan) if ca is None else ca
        values = {"residue_numbers": np.arange(1, n + 1), "insertion_codes": np.full(n, ""), "ca": ca, "cb": ca,
                  "has_coords": np.isfinite(ca).all(axis=1), "binding_site": np.zeros(n),
                  "ptm": np.zeros(n)}  # fmt: skip
        for name, dtype in SET_ARRAYS.items():
            columns[name].append(np.asarray(values[name]).astype(dtype))
    arrays = {name: np.concatenate(parts) if parts else np.zeros(0, dtype=SET_ARRAYS[name])
              for name, parts in columns.items()}  # fmt: skip
    header = {"format": "plmlens-proteins/1", "source": "attack", "records": entries}
    return {"__index__": json.dumps(header), **arrays}


def write_npz(path: Path, members: dict[str, Any]) -> Path:
    """An ``.npz`` of `members` (text becomes a 0-d string array), laid out as `numpy.savez_compressed` writes
    it, at the fastest compression level (a 10-million-residue set is written in seconds)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, value in members.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asarray(value), allow_pickle=False)
    return path


def read_npz(path: Path) -> dict[str, Any]:
    """An ``.npz`` file's members, text members as str."""
    with np.load(path, allow_pickle=False) as data:
        members = {name: data[name] for name in data.files}
    return {name: str(value[()]) if value.dtype.kind == "U" and value.ndim == 0 else value
            for name, value in members.items()}  # fmt: skip


def write_protein_set(path: Path, records: Sequence[SetRecord], edit: Callable[[dict], None] | None = None) -> Path:
    """A protein set of `records`, its members passed through `edit` first."""
    members = protein_set_members(records)
    if edit is not None:
        edit(members)
    return write_npz(path, members)


def small_set(seed: int = 0, n: int = 4, first_id: str | None = None) -> list[SetRecord]:
    """`n` proteins of 30-40 residues with coordinates (the first named `first_id` when given)."""
    sequences = random_sequences(n, seed, 30, 40)
    return [SetRecord(first_id if k == 0 and first_id else f"P{k}", s, True, seed + k) for k, s in enumerate(sequences)]


def flip_member(path: Path) -> Path:
    """Flip 16 bytes in the middle of the largest member's compressed data (zlib.error or a bad CRC)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda item: item.compress_size)
    start = info.header_offset
    name_length, extra_length = (int.from_bytes(data[start + k : start + k + 2], "little") for k in (26, 28))
    middle = start + 30 + name_length + extra_length + info.compress_size // 2
    for k in range(middle, middle + 16):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def flip_directory(path: Path) -> Path:
    """Flip a bit of the last central-directory entry's local-header offset (a member that cannot be opened)."""
    data = bytearray(path.read_bytes())
    entry = data.rindex(b"PK\x01\x02")
    data[entry + 42] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def edit_json_member(path: Path, name: str, edit: Callable[[Any], Any]) -> Path:
    """Replace an ``.npz`` JSON member by what `edit(parsed)` returns (a str is stored as it is)."""
    members = read_npz(path)
    value = edit(json.loads(members[name]))
    members[name] = value if isinstance(value, str) else json.dumps(value)
    return write_npz(path, members)


# --------------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------------


def analyze_args(lab: Lab, data: object, out: Path, *more: object) -> list[object]:
    """``analyze`` with the tiny BERT and few bootstrap replicates."""
    return ["analyze", "--model", bert(lab), "--data", data, "--out", out, "--n-bootstrap", "20", *more]


def finished_run(lab: Lab) -> Path:
    """A finished ``analyze`` run of the tiny BERT on the synthetic structures (properties contact, aa_A)."""

    def build(directory: Path) -> Path:
        out = directory / "run"
        args = analyze_args(lab, f"{structures(lab)}::dssp=false", out, "--properties", "contact,aa_A")
        proc = lab.plmlens(args, directory)
        if proc.rc != 0:
            raise SetupError(f"analyze exit {proc.rc}: {crash(proc) or proc.last_line()}")
        return out

    return lab.fixture("finished_run", build)


def copy_run(lab: Lab, destination: Path) -> Path:
    """A copy of the finished run's files (not its hidden ones)."""
    source = finished_run(lab)
    destination.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if not path.name.startswith(".") and path.is_file():
            shutil.copy2(path, destination / path.name)
    return destination


def interrupt_at_checkpoint(lab: Lab, args: Sequence[object], cwd: Path, out: Path) -> Proc:
    """Start `args`, send SIGTERM as soon as ``OUT/checkpoint.npz`` exists, and wait for the exit."""
    running = lab.start(args, cwd)
    checkpoint = out / "checkpoint.npz"
    running.wait_for(checkpoint.exists, timeout=120, interval=0.005)
    running.signal(signal.SIGTERM)
    proc = running.finish(120)
    if proc.rc != 143 or not checkpoint.exists():
        raise SetupError(f"no interrupted run (exit {proc.rc}, checkpoint {checkpoint.exists()}): {proc.last_line()}")
    return proc


def interrupted_run(lab: Lab) -> tuple[Path, list[object]]:
    """An analyze run stopped by SIGTERM (its checkpoint.npz) and the arguments that resume it."""

    def build(directory: Path) -> tuple[Path, list[object]]:
        out = directory / "run"
        args = analyze_args(lab, fasta(lab), out, "--checkpoint-seconds", "0", "--batch-size", "2")
        interrupt_at_checkpoint(lab, args, directory, out)
        return out / "checkpoint.npz", args

    return lab.fixture("interrupted_run", build)


def properties_of(run: Path) -> tuple[set[str] | None, set[str] | None]:
    """The properties summary.json names and those heads.csv holds (None where the file is missing)."""
    summary = run / "summary.json"
    heads = run / "heads.csv"
    named = set(json.loads(summary.read_text())["properties"]) if summary.exists() else None
    in_heads = {row["property"] for row in csv.DictReader(heads.open())} if heads.exists() else None
    return named, in_heads


def run_consistency(run: Path) -> str | None:
    """Why the run directory mixes two runs (summary.json against heads.csv and layers.csv), or None."""
    try:
        named, in_heads = properties_of(run)
    except (OSError, ValueError, KeyError) as error:
        return f"unreadable outputs: {error}"
    if named is None:
        return None
    if in_heads != named:
        return f"summary.json names {sorted(named)} but heads.csv holds {sorted(in_heads or [])}"
    layers = run / "layers.csv"
    if layers.exists():
        in_layers = {row["property"] for row in csv.DictReader(layers.open())}
        if in_layers != named:
            return f"summary.json names {sorted(named)} but layers.csv holds {sorted(in_layers)}"
    return None


# --------------------------------------------------------------------------------------------------
# Headless Chromium
# --------------------------------------------------------------------------------------------------

REPORT_PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const count = (selector) => String(document.querySelectorAll(selector).length);
  document.body.dataset.probeStats = count("#explorer-stats tr");
  document.body.dataset.probeProteins = count("#explorer-protein option");
  document.body.dataset.probeOk = "1";
}, 3500));
</script>"""

COMPARE_PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const cells = document.querySelectorAll(".cells .cell");
  document.body.dataset.probeCells = String(cells.length);
  if (cells.length) { cells[0].click(); }
  setTimeout(() => {
    const status = document.getElementById("explorer-status");
    document.body.dataset.probeHead = status ? status.dataset.head || "" : "no status";
    document.body.dataset.probeRows = String(document.querySelectorAll("#explorer-table tr").length);
    document.body.dataset.probeOk = "1";
  }, 500);
}, 500));
</script>"""


@dataclass
class Page:
    """What headless Chromium saw: <body>'s data attributes, the dumped DOM and uncaught errors."""

    attributes: dict[str, str]
    dom: str
    uncaught: list[str]


def browse(page: Path, probe: str, workdir: Path) -> Page:
    """Load a copy of `page` with `probe` appended to <body> in headless Chromium and dump its DOM."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SetupError("missing input: chromium (apt-get install chromium)")
    text = page.read_text()
    at = text.rfind("</body>")
    probed = page.with_name(f"probed-{page.name}")
    probed.write_text(text[:at] + probe + text[at:] if at >= 0 else text + probe)
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--enable-unsafe-swiftshader", "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=8000", f"--user-data-dir={workdir / 'chromium-profile'}", "--dump-dom",
               probed.resolve().as_uri()]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, start_new_session=True)
    body = re.search(r"<body([^>]*)>", done.stdout)
    found = re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1)) if body else []
    attributes = {name: html.unescape(value) for name, value in found}
    uncaught = [line for line in done.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    return Page(attributes, done.stdout, uncaught)


def page_problem(page: Page) -> str | None:
    """Why a page failed the injection attack (script ran, page errors, its scripts never ran), or None."""
    if "pwned" in page.attributes:
        return f"data-pwned={page.attributes['pwned']}: the injected markup ran"
    if page.uncaught:
        return f"uncaught error: {page.uncaught[0]}"
    errors = page.attributes.get("errors")
    if errors not in (None, "[]"):
        return f"page errors: {errors}"
    if page.attributes.get("probe-ok") != "1":
        return "the page's scripts stopped before its end (embedded data swallowed the page)"
    return None


def report_verdict(page: Page, need_proteins: bool) -> Verdict:
    """The injection verdict of a report page whose head explorer must still work."""
    problem = page_problem(page)
    if problem:
        return failed(problem)
    stats, proteins = int(page.attributes.get("probe-stats", 0)), int(page.attributes.get("probe-proteins", 0))
    if stats == 0:
        return failed("no data-pwned, but the head explorer shows no statistics")
    if need_proteins and proteins == 0:
        return failed("no data-pwned, but the head explorer offers no example protein")
    shown = "shown as text" if "&lt;img src=x onerror" in page.dom else "not shown"
    return held(f"no data-pwned, no page error; explorer: {stats} statistics rows, {proteins} proteins; "
                f"hostile text {shown}")  # fmt: skip


def report_attack(lab: Lab, workdir: Path, data: str, model: object) -> Verdict:
    """Analyze `data`, write its report with two candidates, and load the page."""
    run = workdir / "run"
    args = ["analyze", "--model", model, "--data", data, "--out", run, "--n-bootstrap", "20", "--properties",
            "contact,aa_A"]  # fmt: skip
    proc = lab.plmlens(args, workdir)
    if proc.rc != 0 or crash(proc):
        return failed(f"analyze exit {proc.rc}: {crash(proc) or proc.last_line()}")
    proc = lab.plmlens(["report", run, "--candidates", "2"], workdir, timeout=180)
    if proc.rc != 0 or crash(proc) or not (run / "report.html").exists():
        return failed(f"report exit {proc.rc}: {crash(proc) or proc.last_line()}")
    return report_verdict(browse(run / "report.html", REPORT_PROBE, workdir), need_proteins=True)


# --------------------------------------------------------------------------------------------------
# 1. Stored script injection
# --------------------------------------------------------------------------------------------------


@attack("1a-report-file-name", "a PDB file named like markup, analyzed by sapiens-heavy, in report.html", quick=True)
def report_file_name(lab: Lab, workdir: Path) -> Verdict:
    if not ANTIBODY_PDB.exists():
        raise SetupError(f"missing input: {ANTIBODY_PDB}")
    folder = workdir / "data"
    folder.mkdir()
    shutil.copy(ANTIBODY_PDB, folder / f"{HOSTILE}.pdb")
    return report_attack(lab, workdir, f"{folder}::chains=H", "sapiens-heavy")


@attack("1b-report-set-id", "a protein set whose protein id is markup, in report.html", quick=True)
def report_set_id(lab: Lab, workdir: Path) -> Verdict:
    data = write_protein_set(workdir / "hostile.proteins.npz", small_set(0, 4, first_id=HOSTILE))
    return report_attack(lab, workdir, str(data), bert(lab))


@attack("1c-report-property", "a property name in heads.csv and summary.json that is markup, in report.html",
        quick=True)  # fmt: skip
def report_property(lab: Lab, workdir: Path) -> Verdict:
    run = copy_run(lab, workdir / "run")
    for name in ("heads.csv", "layers.csv", "summary.json"):
        path = run / name
        path.write_text(path.read_text().replace("aa_A", HOSTILE))
    proc = lab.plmlens(["report", run, "--no-views"], workdir)
    if proc.rc != 0 or crash(proc) or not (run / "report.html").exists():
        return failed(f"report exit {proc.rc}: {crash(proc) or proc.last_line()}")
    return report_verdict(browse(run / "report.html", REPORT_PROBE, workdir), need_proteins=False)


@attack("1d-compare-model-name", "a model name holding <!--<script> and markup, in compare.html", quick=True)
def compare_model_name(lab: Lab, workdir: Path) -> Verdict:
    first, second = copy_run(lab, workdir / "a"), copy_run(lab, workdir / "b")
    summary = json.loads((first / "summary.json").read_text())
    summary["model"]["name"] = f"evil{SCRIPT_BREAKER}{HOSTILE}"
    (first / "summary.json").write_text(json.dumps(summary))
    out = workdir / "compare"
    proc = lab.plmlens(["compare", first, second, "--out", out], workdir)
    if proc.rc != 0 or crash(proc) or not (out / "compare.html").exists():
        return failed(f"compare exit {proc.rc}: {crash(proc) or proc.last_line()}")
    page = browse(out / "compare.html", COMPARE_PROBE, workdir)
    problem = page_problem(page)
    if problem:
        return failed(problem)
    head, rows = page.attributes.get("probe-head", ""), int(page.attributes.get("probe-rows", 0))
    if not head or rows <= 1:
        return failed(f"no data-pwned, but a clicked head shows nothing (status {head!r}, {rows} table rows)")
    return held(f"no data-pwned, no page error; clicked head {head!r} shows {rows - 1} properties")


# --------------------------------------------------------------------------------------------------
# 2. Resume over swapped data
# --------------------------------------------------------------------------------------------------


def swapped_resume(lab: Lab, workdir: Path, data: Path, write_other: Callable[[Path], None]) -> Verdict:
    """Interrupt a run on `data`, replace the file's content (same path, size class and mtime), resume."""
    out = workdir / "run"
    args = analyze_args(lab, data, out, "--checkpoint-seconds", "0", "--batch-size", "2")
    interrupt_at_checkpoint(lab, args, workdir, out)
    mtime = data.stat().st_mtime_ns
    write_other(data)
    os.utime(data, ns=(mtime, mtime))
    return refused(lab.plmlens([*args, "--resume"], workdir), code=2)


@attack("2a-resume-swapped-set", "--resume after the protein set behind --data was replaced by another")
def resume_swapped_set(lab: Lab, workdir: Path) -> Verdict:
    sequences = random_sequences(120, 2)
    records = [SetRecord(f"H{k}", s, coords=False) for k, s in enumerate(sequences)]
    others = [SetRecord(f"H{k}", s, coords=False) for k, s in enumerate(same_shape_sequences(sequences, 3))]
    data = write_protein_set(workdir / "chains.proteins.npz", records)
    return swapped_resume(lab, workdir, data, lambda path: write_protein_set(path, others))


@attack("2b-resume-swapped-fasta", "--resume after the FASTA behind --data got other sequences")
def resume_swapped_fasta(lab: Lab, workdir: Path) -> Verdict:
    sequences = random_sequences(120, 4)
    data = write_fasta(workdir / "chains.fasta", sequences)
    return swapped_resume(lab, workdir, data, lambda path: write_fasta(path, same_shape_sequences(sequences, 5)))


# --------------------------------------------------------------------------------------------------
# 3. The Jacobian and repeated ids
# --------------------------------------------------------------------------------------------------


@attack("3-jacobian-duplicate-ids", "jacobian on four files named p.pdb (different lengths) in four folders")
def jacobian_duplicate_ids(lab: Lab, workdir: Path) -> Verdict:
    lengths = [30, 34, 38, 42]
    for k, length in enumerate(lengths):
        folder = workdir / "data" / f"a{k + 1}"
        folder.mkdir(parents=True)
        (folder / "p.pdb").write_text(pdb_text(length, seed=10 + k))
    out = workdir / "out"
    args = ["jacobian", "--model", bert(lab), "--data", f"{workdir / 'data'}::dssp=false", "--out", out,
            "--regression-proteins", "2", "--format", "csv"]  # fmt: skip
    proc = lab.plmlens(args, workdir, timeout=240)
    problem = crash(proc)
    if problem or proc.rc != 0:
        return failed(problem or f"exit {proc.rc}: {proc.last_line()}")
    with np.load(out / "jacobian_maps.npz", allow_pickle=False) as maps:
        ids = [str(name) for name in maps["ids"]]
        shapes = {name: maps[f"map{k}"].shape for k, name in enumerate(ids)}
    table = {(row["protein"], int(row["length"])) for row in csv.DictReader((out / "jacobian.csv").open())}
    # The folders are read in order (a1 ... a4): the first p.pdb keeps its id, the k-th repeat is ID#k.
    base = min(ids, key=len).split("#")[0] if ids else ""
    expected = {base if k == 0 else f"{base}#{k + 1}": length for k, length in enumerate(lengths)}
    evaluated = sorted({name for name, _ in table})
    warned = [line for line in proc.err.splitlines() if "warning" in line.lower() and "#2" in line]
    if len(set(ids)) != len(ids) or len(ids) != len(evaluated) or len(ids) != 2:
        return failed(f"maps {ids} for the evaluated proteins {evaluated} (expected 2 distinct)")
    wrong = [f"{name}: map {shapes[name]}" for name in ids if shapes[name] != (expected.get(name, -1),) * 2]
    wrong += [f"{name}: length {length} in jacobian.csv" for name, length in table if expected.get(name) != length]
    if wrong:
        return failed("; ".join(wrong))
    if len(warned) != 1:
        return failed(f"{len(warned)} warning lines about the repeated id (expected 1)")
    return held(f"{', '.join(f'{n} {shapes[n][0]}x{shapes[n][0]}' for n in ids)}; {warned[0]}")


# --------------------------------------------------------------------------------------------------
# 4. Damaged checkpoints and protein sets
# --------------------------------------------------------------------------------------------------


def damaged_checkpoint(lab: Lab, workdir: Path, damage: Callable[[Path], object]) -> Verdict:
    """Resume a copy of an interrupted run whose checkpoint.npz went through `damage`."""
    checkpoint, args = interrupted_run(lab)
    out = workdir / "run"
    out.mkdir()
    damage(shutil.copy(checkpoint, out / "checkpoint.npz"))
    resume = [str(out) if value == checkpoint.parent else value for value in args]
    return refused(lab.plmlens([*resume, "--resume"], workdir), "checkpoint.npz")


def _run_record(edit: Callable[[dict], Any]) -> Callable[[Path], object]:
    return lambda path: edit_json_member(path, "__run__", edit)


def _set_progress(name: str, value: Any) -> Callable[[dict], dict]:
    def edit(run: dict) -> dict:
        run["progress"][name] = value
        return run

    return edit


def _nan_sums(path: Path) -> None:
    members = read_npz(path)
    name = max((n for n, v in members.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"),
               key=lambda n: members[n].size)  # fmt: skip
    members[name] = np.full_like(members[name], np.nan)
    write_npz(path, members)


def _meta(name: str, value: Any) -> Callable[[Path], object]:
    def edit(meta: dict) -> dict:
        meta[name] = value
        return meta

    return lambda path: edit_json_member(path, "__meta__", edit)


def _fingerprint_list(run: dict) -> dict:
    run["fingerprint"] = ["not", "a", "record"]
    return run


@attack("4a-checkpoint-flipped-member", "--resume from a checkpoint with bytes flipped inside a member")
def checkpoint_flipped_member(lab: Lab, workdir: Path) -> Verdict:
    return damaged_checkpoint(lab, workdir, flip_member)


@attack("4b-checkpoint-flipped-directory", "--resume from a checkpoint with a bit flipped in the zip directory")
def checkpoint_flipped_directory(lab: Lab, workdir: Path) -> Verdict:
    return damaged_checkpoint(lab, workdir, flip_directory)


@attack("4c-checkpoint-fingerprint-type", "--resume from a checkpoint whose fingerprint is a JSON list")
def checkpoint_fingerprint_type(lab: Lab, workdir: Path) -> Verdict:
    return damaged_checkpoint(lab, workdir, _run_record(_fingerprint_list))


@attack("4d-checkpoint-run-record-type", "--resume from a checkpoint whose run record is a JSON list")
def checkpoint_run_record_type(lab: Lab, workdir: Path) -> Verdict:
    return damaged_checkpoint(lab, workdir, _run_record(lambda run: [run]))


@attack("4e-checkpoint-nan-sums", "--resume from a checkpoint whose largest sum array is NaN")
def checkpoint_nan_sums(lab: Lab, workdir: Path) -> Verdict:
    return damaged_checkpoint(lab, workdir, _nan_sums)


@attack("4f-checkpoint-deep-json", "--resume from a checkpoint whose run record nests 200,000 deep")
def checkpoint_deep_json(lab: Lab, workdir: Path) -> Verdict:
    return damaged_checkpoint(lab, workdir, _run_record(lambda run: "[" * 200_000 + "]" * 200_000))


@attack("4g-checkpoint-complete-below", "--resume from a checkpoint with complete_below=1e9")
def checkpoint_complete_below(lab: Lab, workdir: Path) -> Verdict:
    return damaged_checkpoint(lab, workdir, _run_record(_set_progress("complete_below", 1e9)))


@attack("4h-checkpoint-n-proteins", "--resume from a checkpoint with n_proteins=-7")
def checkpoint_n_proteins(lab: Lab, workdir: Path) -> Verdict:
    return damaged_checkpoint(lab, workdir, _meta("n_proteins", -7))


def damaged_set(lab: Lab, workdir: Path, damage: Callable[[Path], object]) -> Verdict:
    """analyze --data a protein set that went through `damage`: one line naming the file."""
    data = write_protein_set(workdir / "damaged.proteins.npz", small_set(0, 4))
    damage(data)
    return refused(lab.plmlens(analyze_args(lab, data, workdir / "run"), workdir), "damaged.proteins.npz")


def _index(edit: Callable[[Any], Any]) -> Callable[[Path], object]:
    return lambda path: edit_json_member(path, "__index__", edit)


def _sequence_list(index: dict) -> dict:
    index["records"][1]["sequence"] = list(index["records"][1]["sequence"])
    return index


@attack("4i-set-flipped-member", "--data a protein set with bytes flipped inside a member")
def set_flipped_member(lab: Lab, workdir: Path) -> Verdict:
    return damaged_set(lab, workdir, flip_member)


@attack("4j-set-flipped-directory", "--data a protein set with a bit flipped in the zip directory")
def set_flipped_directory(lab: Lab, workdir: Path) -> Verdict:
    return damaged_set(lab, workdir, flip_directory)


@attack("4k-set-deep-json", "--data a protein set whose index nests 200,000 deep")
def set_deep_json(lab: Lab, workdir: Path) -> Verdict:
    return damaged_set(lab, workdir, _index(lambda index: "[" * 200_000 + "]" * 200_000))


@attack("4l-set-sequence-list", "--data a protein set with a sequence stored as a list")
def set_sequence_list(lab: Lab, workdir: Path) -> Verdict:
    return damaged_set(lab, workdir, _index(_sequence_list))


# --------------------------------------------------------------------------------------------------
# 5. Outputs: never replaced unasked, never half-written, one writer, checked before the model runs
# --------------------------------------------------------------------------------------------------


def finished_with_report(lab: Lab, workdir: Path) -> tuple[Path, list[object]]:
    """A finished run with a (stand-in) report.html and figures/, and the analyze arguments that made it."""
    run = copy_run(lab, workdir / "run")
    (run / "report.html").write_text("<html>report of the first run</html>")
    (run / "figures").mkdir()
    (run / "figures" / "heads_contact.png").write_bytes(b"first run")
    return run, analyze_args(lab, f"{structures(lab)}::dssp=false", run, "--properties", "contact,aa_A")


@attack("5a-analyze-keeps-finished-run", "analyze into a finished run directory without --overwrite", quick=True)
def analyze_keeps_finished(lab: Lab, workdir: Path) -> Verdict:
    run, args = finished_with_report(lab, workdir)
    before = (run / "summary.json").read_bytes()
    proc = lab.plmlens(args, workdir)
    verdict = refused(proc, before_model=True)
    if (run / "summary.json").read_bytes() != before:
        return failed(f"exit {proc.rc}: summary.json rewritten; report.html from the first run left beside it")
    return verdict


@attack("5b-analyze-overwrite-drops-report", "analyze --overwrite into a run with report.html and figures/",
        quick=True)  # fmt: skip
def analyze_overwrite_drops_report(lab: Lab, workdir: Path) -> Verdict:
    run, args = finished_with_report(lab, workdir)
    proc = lab.plmlens([*args, "--overwrite"], workdir)
    problem = crash(proc)
    if problem or proc.rc != 0:
        return failed(problem or f"exit {proc.rc}: {proc.last_line()}")
    stale = [name for name in ("report.html", "figures") if (run / name).exists()]
    if stale:
        return failed(f"exit 0, stale {' and '.join(stale)} of the first run left beside the new CSVs")
    return held("exit 0; report.html and figures/ of the first run removed")


@attack("5c-lock", "a second analyze --overwrite into the --out another analyze is writing", quick=True)
def lock(lab: Lab, workdir: Path) -> Verdict:
    out = workdir / "run"
    data = write_fasta(workdir / "many.fasta", random_sequences(2000, 6))
    first = lab.start(analyze_args(lab, data, out, "--checkpoint-seconds", "0", "--batch-size", "2"), workdir)
    try:
        if not first.wait_for((out / "checkpoint.npz").exists, timeout=90):
            return failed(f"setup: the first analyze never wrote a checkpoint: {first.finish(5).last_line()}")
        second = lab.plmlens([*analyze_args(lab, data, out, "--limit", "2"), "--overwrite"], workdir)
        still = first.alive()
    finally:
        first.signal(signal.SIGTERM)
        ended = first.finish(60)
    if second.rc == 0:
        state = "still running" if still else f"then exit {ended.rc}"
        return failed(f"both wrote there: the second analyze exit 0 while the first was writing ({state})")
    if not still:
        return failed(f"inconclusive: the first analyze ended (exit {ended.rc}) before the second was refused")
    return refused(second, before_model=True)


def refuses_existing_file(proc: Proc, path: Path, before: bytes) -> Verdict:
    """A command that must refuse to replace `path` (which held `before`) without --overwrite."""
    if path.read_bytes() != before:
        return failed(f"exit {proc.rc}: {path.name} replaced without --overwrite")
    return refused(proc, path.name)


@attack("5d-save-keeps-file", "proteins save --out an existing protein set, without --overwrite", quick=True)
def save_keeps_file(lab: Lab, workdir: Path) -> Verdict:
    target = write_protein_set(workdir / "kept.proteins.npz", small_set(1, 2))
    before = target.read_bytes()
    proc = lab.plmlens(["proteins", "save", f"{structures(lab)}::dssp=false", "--out", target], workdir)
    return refuses_existing_file(proc, target, before)


@attack("5e-compare-keeps-output", "compare --out a directory holding an earlier comparison", quick=True)
def compare_keeps_output(lab: Lab, workdir: Path) -> Verdict:
    first, second = copy_run(lab, workdir / "a"), copy_run(lab, workdir / "b")
    out = workdir / "compare"
    out.mkdir()
    (out / "compare.html").write_text("<html>earlier comparison</html>")
    (out / "models.csv").write_text("model\nearlier\n")
    before = (out / "compare.html").read_bytes()
    proc = lab.plmlens(["compare", first, second, "--out", out], workdir)
    return refuses_existing_file(proc, out / "compare.html", before)


@attack("5f-describe-json-keeps-file", "proteins describe --json an existing file", quick=True)
def describe_json_keeps_file(lab: Lab, workdir: Path) -> Verdict:
    target = workdir / "described.json"
    target.write_text('{"earlier": true}')
    before = target.read_bytes()
    proc = lab.plmlens(["proteins", "describe", fasta(lab), "--json", target], workdir)
    return refuses_existing_file(proc, target, before)


@attack("5g-sigterm-final-save", "SIGTERM the moment analyze --overwrite replaces heads.csv of an earlier run")
def sigterm_final_save(lab: Lab, workdir: Path) -> Verdict:
    run = copy_run(lab, workdir / "run")
    heads = run / "heads.csv"
    before = heads.stat()
    args = analyze_args(lab, f"{structures(lab)}::dssp=false", run, "--properties", "contact,aa_C", "--overwrite")
    running = lab.start(args, workdir)

    def replaced() -> bool:
        with contextlib.suppress(FileNotFoundError):
            now = heads.stat()
            return (now.st_ino, now.st_mtime_ns) != (before.st_ino, before.st_mtime_ns)
        return True

    caught = running.wait_for(replaced, timeout=120, interval=0.0005)
    running.signal(signal.SIGTERM)
    proc = running.finish(60)
    mixed = run_consistency(run)
    if mixed:
        return failed(f"exit {proc.rc}: {mixed}")
    problem = crash(proc)
    if problem:
        return failed(f"exit {proc.rc}: {problem}")
    if not caught:
        return failed(f"inconclusive: heads.csv never changed (exit {proc.rc})")
    named, _ = properties_of(run)
    return held(f"exit {proc.rc}; summary.json {'absent' if named is None else sorted(named)} matches its CSVs")


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `mount_point` (needs root), unmounted afterwards."""
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SetupError(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(directory: Path) -> None:
    """Write zeros into `directory` until its file system is full."""
    block = b"\0" * 65536
    with open(directory / "filler", "wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(block)
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 512)


def full_disk(lab: Lab, workdir: Path, when: str) -> Verdict:
    """analyze --overwrite into a finished run (contact, aa_A) on a 16 MiB tmpfs, with other properties; the
    disk is filled `when` the model has started ("start") or when the final save begins ("final": the run
    is stopped with SIGSTOP as soon as its last checkpoint is in place or an output changes, the disk
    filled, the run continued). Verdict: one error line, and a summary.json left there matches its CSVs."""
    with tmpfs(workdir / "mnt", "16m") as mount:
        run = copy_run(lab, mount / "run")
        before = (run / "heads.csv").stat().st_mtime_ns
        args = analyze_args(lab, fasta(lab), run, "--properties", "aa_C,aa_D", "--overwrite")
        running = lab.start(args, workdir)

        def started() -> bool:
            return re.search(r"(?m)^analyze: ", running.stderr()) is not None

        def final_save() -> bool:
            with contextlib.suppress(FileNotFoundError):
                return (run / "checkpoint.npz").exists() or (run / "heads.csv").stat().st_mtime_ns != before
            return True

        reached = running.wait_for(started if when == "start" else final_save, 120, interval=0.001)
        running.signal(signal.SIGSTOP)
        fill(mount)
        running.signal(signal.SIGCONT)
        proc = running.finish(120)
        mixed = run_consistency(run)
    if not reached:
        return failed(f"inconclusive: the moment to fill the disk never came ({crash(proc) or proc.last_line()})")
    if mixed:
        return failed(f"exit {proc.rc}: {mixed}; {crash(proc) or proc.last_line()}")
    return refused(proc)


@attack("5h-full-disk-final-save", "the disk fills up as analyze --overwrite begins its final save")
def full_disk_final_save(lab: Lab, workdir: Path) -> Verdict:
    return full_disk(lab, workdir, "final")


@attack("5i-full-disk-during-run", "the disk fills up while analyze --overwrite runs")
def full_disk_during_run(lab: Lab, workdir: Path) -> Verdict:
    return full_disk(lab, workdir, "start")


@attack("5j-out-is-a-file", "analyze --out an existing regular file", quick=True)
def out_is_a_file(lab: Lab, workdir: Path) -> Verdict:
    target = workdir / "results"
    target.write_text("not a directory")
    return refused(lab.plmlens(analyze_args(lab, fasta(lab), target), workdir), "results", before_model=True)


@attack("5k-out-unwritable", "analyze as nobody --out a folder nobody cannot write", quick=True)
def out_unwritable(lab: Lab, workdir: Path) -> Verdict:
    out = workdir / "locked"
    out.mkdir(mode=0o755)
    proc = lab.plmlens(analyze_args(lab, fasta(lab), out), workdir, user="nobody")
    return refused(proc, "locked", before_model=True)


@attack("5l-full-disk-at-start", "analyze --out a folder on a file system that is already full", quick=True)
def full_disk_at_start(lab: Lab, workdir: Path) -> Verdict:
    with tmpfs(workdir / "mnt", "1m") as mount:
        fill(mount)
        return refused(lab.plmlens(analyze_args(lab, fasta(lab), mount / "run"), workdir), before_model=True)


# --------------------------------------------------------------------------------------------------
# 6. Memory blow-ups and inputs that never end
# --------------------------------------------------------------------------------------------------


def bounded(proc: Proc, name: str) -> Verdict:
    """Completed under the memory limit, or refused in one line naming `name`."""
    problem = crash(proc)
    if problem:
        return failed(problem)
    if proc.rc == 0:
        return held(f"exit 0 in {proc.seconds:.1f} s under a {MEMORY_LIMIT / 1e9:.0f} GB address-space limit")
    return refused(proc, name)


@attack("6a-describe-long-fasta", "proteins describe a FASTA of one 200,000-residue sequence, 4 GB limit")
def describe_long_fasta(lab: Lab, workdir: Path) -> Verdict:
    data = write_fasta(workdir / "long.fasta", random_sequences(1, 7, 200_000, 200_000))
    return bounded(lab.plmlens(["proteins", "describe", data], workdir, memory=MEMORY_LIMIT), "long.fasta")


@attack("6b-describe-huge-set", "proteins describe a protein set of one 10-million-residue protein, 4 GB limit")
def describe_huge_set(lab: Lab, workdir: Path) -> Verdict:
    sequence = random_sequences(1, 8, 10_000_000, 10_000_000)[0]
    data = write_protein_set(workdir / "huge.proteins.npz", [SetRecord("HUGE", sequence, coords=False)])
    proc = lab.plmlens(["proteins", "describe", data], workdir, memory=MEMORY_LIMIT, timeout=180)
    return bounded(proc, "huge.proteins.npz")


@attack("6c-fifo-source", "proteins describe a FIFO named data.fasta (nothing ever writes to it)")
def fifo_source(lab: Lab, workdir: Path) -> Verdict:
    fifo = workdir / "data.fasta"
    os.mkfifo(fifo)
    return refused(lab.plmlens(["proteins", "describe", fifo], workdir, timeout=30), "data.fasta")


@attack("6d-symlink-dev-zero", "proteins describe zero.fasta, a symbolic link to /dev/zero, 4 GB limit")
def symlink_dev_zero(lab: Lab, workdir: Path) -> Verdict:
    link = workdir / "zero.fasta"
    link.symlink_to("/dev/zero")
    return refused(lab.plmlens(["proteins", "describe", link], workdir, timeout=60, memory=MEMORY_LIMIT),
                   "zero.fasta")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# 7. What the console was not told
# --------------------------------------------------------------------------------------------------


@attack("7a-truncation-told", "analyze a 200,000-residue protein with a 254-residue model")
def truncation_told(lab: Lab, workdir: Path) -> Verdict:
    data = write_fasta(workdir / "long.fasta", random_sequences(1, 9, 200_000, 200_000))
    run = workdir / "run"
    proc = lab.plmlens(analyze_args(lab, data, run), workdir, memory=MEMORY_LIMIT, timeout=180)
    problem = crash(proc)
    if problem or proc.rc != 0:
        return failed(problem or f"exit {proc.rc}: {proc.last_line()}")
    told = [line for line in proc.text.splitlines() if "truncat" in line.replace(str(workdir), "").lower()]
    summary = json.loads((run / "summary.json").read_text())
    if not told:
        return failed(f"no console line about the truncation (summary.json: n_truncated={summary.get('n_truncated')})")
    if not isinstance(summary.get("max_residues"), int):
        return failed(f"summary.json has no max_residues (max_length={summary.get('max_length')}); told: {told[0]}")
    return held(f"max_residues={summary['max_residues']} in summary.json; console: {told[0]}")


def named_in_skip_lines(proc: Proc, names: Sequence[str]) -> Verdict:
    """describe ran to its end and named each of `names` in a line of its own."""
    problem = crash(proc)
    if problem or proc.rc != 0:
        return failed(problem or f"exit {proc.rc}: {proc.last_line()}")
    lines = proc.text.splitlines()
    missing = [name for name in names if not any(name in line for line in lines)]
    if missing:
        return failed(f"exit 0, no line names {', '.join(missing)}")
    shown = [next(line for line in lines if name in line) for name in names]
    return held(" | ".join(shown))


def good_folder(workdir: Path) -> Path:
    folder = workdir / "data"
    folder.mkdir()
    (folder / "good.pdb").write_text(pdb_text(35, seed=20))
    return folder


@attack("7b-broken-symlink", "proteins describe a folder holding a broken symbolic link gone.pdb")
def broken_symlink(lab: Lab, workdir: Path) -> Verdict:
    folder = good_folder(workdir)
    (folder / "gone.pdb").symlink_to(folder / "missing.pdb")
    return named_in_skip_lines(lab.plmlens(["proteins", "describe", f"{folder}::dssp=false"], workdir), ["gone.pdb"])


@attack("7c-symlink-loops", "proteins describe a folder holding symbolic link loops (self.pdb, ping.pdb/pong.pdb)")
def symlink_loops(lab: Lab, workdir: Path) -> Verdict:
    folder = good_folder(workdir)
    (folder / "self.pdb").symlink_to("self.pdb")
    (folder / "ping.pdb").symlink_to("pong.pdb")
    (folder / "pong.pdb").symlink_to("ping.pdb")
    proc = lab.plmlens(["proteins", "describe", f"{folder}::dssp=false"], workdir)
    return named_in_skip_lines(proc, ["self.pdb", "ping.pdb", "pong.pdb"])


@attack("7d-unreadable-folder", "proteins describe, as nobody, a folder holding a folder of mode 000")
def unreadable_folder(lab: Lab, workdir: Path) -> Verdict:
    folder = good_folder(workdir)
    locked = folder / "locked"
    locked.mkdir()
    (locked / "hidden.pdb").write_text(pdb_text(35, seed=21))
    locked.chmod(0)
    try:
        proc = lab.plmlens(["proteins", "describe", f"{folder}::dssp=false"], workdir, user="nobody")
    finally:
        locked.chmod(0o755)
    return named_in_skip_lines(proc, ["locked"])


def escaped(proc: Proc, raw: Sequence[bytes], forged: str | None = None) -> Verdict:
    """Nothing of a hostile name reached the terminal raw: none of its `raw` control sequences, and no line
    begins with the `forged` text that followed its newline; the name is shown escaped."""
    problem = crash(proc)
    if problem:
        return failed(problem)
    output = proc.out_bytes + proc.err_bytes
    found = next((line for line in output.splitlines() if any(marker in line for marker in raw)), None)
    if found is not None:
        return failed(f"a raw escape sequence reached the terminal: {found.decode('utf-8', 'replace')!r:.120}")
    if forged and any(line.startswith(forged) for line in proc.text.splitlines()):
        return failed(f"a raw newline reached the terminal: a line begins with {forged!r}")
    shown = next((line for line in proc.text.splitlines() if "\\x1b" in line), None)
    if shown is None:
        return failed(f"exit {proc.rc}: the name is not shown at all")
    return held(f"exit {proc.rc}: {shown}")


@attack("7e-escape-file-name", "proteins describe a folder with an unreadable file whose name holds ESC and a newline")
def escape_file_name(lab: Lab, workdir: Path) -> Verdict:
    folder = good_folder(workdir)
    (folder / "evil\x1b[31mred\nforged: line.pdb").write_bytes(b"\x00\x01 not a structure")
    proc = lab.plmlens(["proteins", "describe", f"{folder}::dssp=false"], workdir)
    return escaped(proc, [b"\x1b[31mred"], "forged: line")


@attack("7f-escape-id", "proteins describe a FASTA whose skipped record's id holds ESC and BEL sequences")
def escape_id(lab: Lab, workdir: Path) -> Verdict:
    data = workdir / "ids.fasta"
    data.write_text(f">evil\x1b]0;owned\x07\x1b[2Jid\n\n>good\n{random_sequences(1, 11)[0]}\n")
    proc = lab.plmlens(["proteins", "describe", data], workdir)
    return escaped(proc, [b"\x1b]0;owned", b"\x07", b"\x1b[2J"])


@attack("7g-nan-residue-numbers", "proteins describe a protein set whose residue numbers are floats with NaN")
def nan_residue_numbers(lab: Lab, workdir: Path) -> Verdict:
    def edit(members: dict) -> None:
        numbers = members["residue_numbers"].astype(np.float64)
        numbers[::7] = np.nan
        members["residue_numbers"] = numbers

    data = write_protein_set(workdir / "nan.proteins.npz", small_set(3, 3), edit)
    proc = lab.plmlens(["proteins", "describe", data], workdir)
    problem = crash(proc)
    if problem:
        return failed(problem)
    warned = [line for line in proc.text.splitlines() if "RuntimeWarning" in line]
    if warned:
        return failed(f"exit {proc.rc}: {warned[0]}")
    if proc.rc != 0:
        return refused(proc, "nan.proteins.npz")
    return held(f"exit 0, no RuntimeWarning: {proc.text.strip().splitlines()[-1]}")


# --------------------------------------------------------------------------------------------------
# 8. Inputs the fuzzer found
# --------------------------------------------------------------------------------------------------


def cif_with_chain(pdb: str, chain: str) -> str:
    """An mmCIF of a PDB text's structure whose chain id is `chain`, quoted (a space is legal in mmCIF, not in
    PDB's one-letter column)."""
    import gemmi

    structure = gemmi.read_pdb_string(pdb)
    structure[0][0].name = "QQ"
    structure.setup_entities()
    text = structure.make_mmcif_document().as_string()
    return re.sub(r"(?<=\s)QQ(?=\s)", f"'{chain}'", text)


@attack("8a-cif-chain-with-space", "proteins describe (DSSP on) an mmCIF whose chain id is 'a b' beside a good file")
def cif_chain_with_space(lab: Lab, workdir: Path) -> Verdict:
    folder = good_folder(workdir)
    (folder / "spaced.cif").write_text(cif_with_chain(pdb_text(40, seed=22), "a b"))
    proc = lab.plmlens(["proteins", "describe", folder, "--format", "csv"], workdir)
    problem = crash(proc)
    if problem or proc.rc != 0:
        return failed(problem or f"exit {proc.rc}: {proc.last_line()}")
    counted = re.search(r"(\d+) proteins, [\d,]+ residues, (\d+) skipped", proc.text)
    if counted is None:
        return failed(f"exit 0 without a count of proteins: {proc.last_line()}")
    if counted.group(1) == "2":
        return held(f"both files read (the chain renamed for mkdssp): {counted.group()}")
    skipped = [line for line in proc.text.splitlines() if line.startswith("skipped") and "spaced.cif" in line]
    if counted.group(1) == "1" and skipped:
        return held(f"{counted.group()}; {skipped[0]}")
    return failed(f"the good file or a skip line naming spaced.cif is missing: {counted.group()}")


@attack("8b-set-record-id-list", "analyze a protein set whose record id is a list")
def set_record_id_list(lab: Lab, workdir: Path) -> Verdict:
    records = small_set(4, 3)
    records[1].id = ["P", 1]
    data = write_protein_set(workdir / "listid.proteins.npz", records)
    proc = lab.plmlens(analyze_args(lab, data, workdir / "run"), workdir)
    problem = crash(proc)
    if problem:
        return failed(problem)
    if proc.rc != 0:
        return refused(proc, "listid.proteins.npz")
    skipped = [line for line in proc.text.splitlines() if line.lower().startswith("skipped") and "listid" in line]
    if not skipped:
        return failed("exit 0, the record whose id is a list taken in silence (no skip line, no error)")
    return held(f"exit 0: {skipped[0]}")


# --------------------------------------------------------------------------------------------------
# Running the attacks
# --------------------------------------------------------------------------------------------------


def selected(quick: bool = False, only: Sequence[str] = ()) -> list[Attack]:
    """The attacks to run: all, the quick subset, or those whose id starts with one of `only`."""
    chosen = [a for a in ATTACKS if a.quick] if quick else list(ATTACKS)
    if only:
        chosen = [a for a in chosen if any(a.id.startswith(prefix) for prefix in only)]
    return chosen


def run_one(lab: Lab, item: Attack) -> Result:
    """Run one attack in its own directory; a missing input or failed setup is a failure, never a skip."""
    started = time.monotonic()
    workdir = lab.root / item.id
    workdir.mkdir(parents=True)
    workdir.chmod(0o755)
    try:
        verdict = item.run(lab, workdir)
    except SetupError as error:
        verdict = failed(f"setup: {error}")
    except Exception as error:  # the attack's own bug must show as a failure, not end the run
        verdict = failed(f"attack error: {type(error).__name__}: {error}")
    return Result(item, verdict, time.monotonic() - started)


def prepare(lab: Lab) -> None:
    """The work root (readable by nobody), a HOME for the commands and the tiny model."""
    lab.root.mkdir(parents=True, exist_ok=True)
    lab.root.chmod(0o755)
    home = lab.root / "home"
    home.mkdir(exist_ok=True)
    home.chmod(0o1777)
    bert(lab)


def run_attacks(src: Path, root: Path, attacks: Sequence[Attack], jobs: int = 2,
                report: Callable[[Result], None] | None = None) -> list[Result]:  # fmt: skip
    """Run `attacks` against the plmlens under `src` in `root`, `jobs` at a time; `report` gets each result
    in order as soon as it and those before it are done."""
    lab = Lab(src=src, root=root)
    prepare(lab)
    check_imported(lab)
    results = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_one, lab, item) for item in attacks]
        for future in futures:
            results.append(future.result())
            if report is not None:
                report(results[-1])
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the CI subset (injections, outputs, lock)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (default: a temp dir)")
    parser.add_argument("--src", type=Path, default=REPO / "src", metavar="PATH", help="the plmlens to attack")
    parser.add_argument("--jobs", type=int, default=2, metavar="N", help="attacks run at once (default 2)")
    parser.add_argument("--only", nargs="+", default=(), metavar="ID", help="attacks whose id starts with ID")
    parser.add_argument("--timings", action="store_true", help="print each attack's seconds to stderr at the end")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    attacks = selected(args.quick, args.only)
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"attack.py: --keep {args.keep} must be a new or empty directory")
    root = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="plmlens-attack-"))
    started = time.monotonic()
    print(f"attacking plmlens from {args.src.resolve()} in {root}", file=sys.stderr, flush=True)
    try:
        results = run_attacks(args.src.resolve(), root, attacks, args.jobs, lambda r: print(r.line(), flush=True))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.timings:
        for result in sorted(results, key=lambda r: -r.seconds):
            print(f"{result.seconds:6.1f} s  {result.attack.id}", file=sys.stderr)
    n_failed = sum(not r.verdict.held for r in results)
    print(f"{len(results) - n_failed} held, {n_failed} failed, of {len(results)} attacks "
          f"in {time.monotonic() - started:.0f} s")  # fmt: skip
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
