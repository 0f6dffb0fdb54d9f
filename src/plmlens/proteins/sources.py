"""SOURCE strings → streams of `Protein`: the one syntax every plmlens command takes.

Syntax::

    SOURCE        := LOCATION [ "::" OPTION { "," OPTION } ]
    LOCATION      := a file | a directory | a glob | a built-in name (``promod3``, ``antibodies``)
    OPTION        := KEY "=" VALUE | KEY          (a bare KEY means KEY=true; lists are joined by "+")

What LOCATION holds is recognised from the file itself, in this order:

``antibody benchmark``
    a directory with a ``MANIFEST.tsv`` that has ``role``, ``heavy_chains``, ``light_chains`` and
    ``partner_file`` columns (``shared/data/antibodies``): the heavy and light (and other antibody)
    chains of every bound antibody, with the paratope — residues within `cutoff` Å of the antigen in
    the partner file — as the binding site.
``promod3``
    the ProMod3 structure database (``structure_db.dat``).
``dataset``
    a TAPE-style LMDB (``*.lmdb``) or JSON (``*.json``) file: TAPE's ``proteinnet`` and
    ``secondary_structure``, the paper's binding-site and PTM label files.
``fasta``
    ``*.fasta``, ``*.fa``, ``*.faa``, ``*.fas``: sequence only.
``protein set``
    ``*.proteins.npz``: the records of another source as read and annotated once (``plmlens proteins
    save``; see `plmlens.proteins.store`).
``structures``
    PDB/mmCIF files (``.pdb``, ``.ent``, ``.cif``, ``.mmcif``, gzip allowed): one file, a directory
    (searched recursively) or a glob.

Options (those that do not apply to a kind are rejected, so typos do not pass silently):

=================  ================================================================================
``min_length=N``   structures, antibodies: skip chains with fewer than N amino acids (default 30;
                   antibodies 80); promod3: skip shorter chains (default 0)
``max_length=N``   promod3: skip longer chains
``ids=A+B`` or     promod3: only these ``PDBID.CHAIN`` ids (``+``-joined, or a file with one id a line)
``ids=FILE``
``chains=A+B``     structures: only these author chain ids
``binding_sites=`` structures: ``ligands`` (default), ``site`` (SITE / struct_site_gen records),
                   ``both``, ``partner``, ``none``
``cutoff=4.5``     structures, antibodies: heavy-atom distance (Å) for ligand / partner contacts
``partner=SPEC``   structures: binding site = residues near a partner: ``chains`` (all other chains),
                   ``chains:C+D``, a file path, or ``replace:OLD:NEW`` (this file's name with OLD
                   replaced by NEW, e.g. ``replace:_r_b:_l_b``)
``dssp=false``     structures, antibodies: do not run DSSP
``variable_domain`` cut antibody chains to the variable domain (ends at the J-region motif WGxG/FGxG);
                   chains without the motif are skipped with that reason
``antibody``       any source: keep only chains that look like immunoglobulin variable domains
                   (conserved Cys–Trp core and a J-region motif; catches antibodies and TCRs), e.g.
                   ``promod3::antibody,variable_domain``
``chain_type=``    any: keep only antibody ``heavy`` or ``light`` chains; the type comes from MANIFEST.tsv for the
                   antibody benchmark, from the sequence elsewhere (`antibody_chain_type`), e.g.
                   ``antibodies::variable_domain,chain_type=heavy``, ``promod3::antibody,chain_type=light``
``limit=N``        any: stop after N proteins
``OPTION=VALUE``   any: the option of a registered annotator (`plmlens.proteins.labels`) runs it on the
                   records finally yielded (after ``variable_domain``, ``chain_type`` and ``limit``), in
                   batches, to add its per-residue labels; a value outside its choices is an error. A
                   protein it cannot label is kept, without the labels, with the reason in
                   ``meta["unlabelled"]``. ``plmlens proteins sources`` lists the annotators.
=================  ================================================================================

Examples::

    shared/data/structures                              every chain of every file, ligand binding sites
    shared/data/structures/7hvp.pdb::chains=A,binding_sites=both
    shared/data/antibodies::variable_domain             antibody Fv chains, paratope as binding site
    'shared/data/antibodies/**/*_r_b.pdb::partner=replace:_r_b:_l_b'
    promod3::min_length=50,max_length=500
    shared/data/provis/binding_site_valid.lmdb
"""

from __future__ import annotations

import csv
import errno
import glob
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from plmlens.proteins.annotations import (
    CHAIN_TYPES,
    antibody_chain_type,
    cut_variable_domain,
    looks_like_variable_domain,
)
from plmlens.proteins.datasets import read_dataset, read_fasta
from plmlens.proteins.ids import unique_ids
from plmlens.proteins.labels import annotate, annotator_options, check_annotator_options
from plmlens.proteins.promod3 import DEFAULT_PATH as PROMOD3_PATH
from plmlens.proteins.promod3 import StructureDB, is_structure_db
from plmlens.proteins.record import Protein, ProteinError
from plmlens.proteins.skips import Skipped
from plmlens.proteins.store import is_protein_set, read_protein_set
from plmlens.proteins.structure import (
    BINDING_SITE_SOURCES,
    StructureOptions,
    is_structure_file,
    read_structure_file,
)

FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas")


class SourceError(ValueError):
    """A SOURCE string that cannot be used (missing path, unknown option, bad value)."""


def shared_data_dir() -> Path:
    """Where the development data lives: ``$PLMLENS_SHARED_DATA``, else ``../shared/data`` beside the
    repository (or the working directory)."""
    if os.environ.get("PLMLENS_SHARED_DATA"):
        return Path(os.environ["PLMLENS_SHARED_DATA"])
    repo = Path(__file__).resolve().parents[3]
    for base in (repo, Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "data"


#: Built-in LOCATION names.
BUILTIN_LOCATIONS: dict[str, Callable[[], Path]] = {
    "promod3": lambda: PROMOD3_PATH,
    "antibodies": lambda: shared_data_dir() / "antibodies",
}


@dataclass
class Source:
    """A parsed SOURCE string: where, what kind, and options."""

    text: str
    location: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Source:
        """Split ``LOCATION::key=value,...`` (see the module docstring)."""
        location, _, option_text = text.partition("::")
        options: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in option_text.split(","))):
            key, sep, value = item.partition("=")
            options[key.strip().replace("-", "_")] = value.strip() if sep else "true"
        if "fv" in options:
            options["variable_domain"] = options.pop("fv")
        return cls(text=text, location=location, options=options)

    def path(self) -> Path:
        builtin = BUILTIN_LOCATIONS.get(self.location)
        return builtin() if builtin else Path(self.location).expanduser()

    def _take(self, name: str, convert: Callable[[str], object], default: object = None) -> object:
        if name not in self.options:
            return default
        value = self.options[name]
        try:
            return convert(value)
        except (TypeError, ValueError):
            raise SourceError(f"{self.text}: bad value for option {name}: {value!r}") from None


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _plus_list(value: str) -> tuple[str, ...]:
    return tuple(filter(None, value.replace(" ", "+").split("+")))


#: Options each kind accepts (``limit`` and ``variable_domain`` apply to all kinds).
_KIND_OPTIONS = {
    "antibodies": {"min_length", "cutoff", "dssp"},
    "promod3": {"min_length", "max_length", "ids"},
    "dataset": set(),
    "fasta": set(),
    "proteinset": set(),
    "structures": {"min_length", "chains", "binding_sites", "cutoff", "partner", "dssp"},
}


def detect_kind(path: Path) -> str:
    """Which kind of source a path is (see the module docstring)."""
    if path.is_dir() and (path / "MANIFEST.tsv").is_file():
        with open(path / "MANIFEST.tsv", newline="") as handle:
            header = set(next(csv.reader(handle, delimiter="\t"), []))
        if {"role", "heavy_chains", "light_chains", "partner_file"} <= header:
            return "antibodies"
    if path.suffix == ".lmdb" or (path.is_file() and path.suffix == ".json"):
        return "dataset"
    if path.is_file() and is_structure_db(path):
        return "promod3"
    if path.name.lower().endswith(FASTA_SUFFIXES):
        return "fasta"
    if is_protein_set(path):
        return "proteinset"
    return "structures"


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))  # fmt: skip


def path_problem(path: Path) -> str | None:
    """Why `path` cannot be read as an input (None when it is a regular file or a directory).

    A FIFO would block a read forever and a device (a link to ``/dev/zero``) would read until memory runs
    out, so anything but a regular file or a directory is refused; so are broken links and link loops.
    """
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            info = path.stat()
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(path) else "no such file or directory"
    except OSError as error:
        return "symbolic link loop" if error.errno == errno.ELOOP else f"cannot be read ({error.strerror or error})"
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "special file")
    return f"not a regular file or directory ({kind})"


def _walk(directory: Path) -> list[Path | Skipped]:
    """Structure files under `directory` (recursively, sorted), and a `Skipped` for each entry that cannot be
    read: a broken link, a link loop, an unreadable folder, a FIFO or device named like a structure file, a
    link to a directory (not followed, as before)."""
    entries: list[tuple[Path, str | None]] = []

    def unreadable(error: OSError) -> None:
        # os.walk reports folders it cannot list here (Path.rglob would pass over them in silence).
        folder = Path(error.filename) if error.filename else directory
        if folder == directory:
            raise SourceError(f"{directory}: cannot read directory ({error.strerror or error})")
        entries.append((folder, f"unreadable folder ({error.strerror or error})"))

    for root, folders, files in os.walk(directory, onerror=unreadable):
        for name in folders:
            if os.path.islink(Path(root) / name):
                entries.append((Path(root) / name, "link to a directory: not followed (give it as its own SOURCE)"))
        for name in files:
            path = Path(root) / name
            problem = path_problem(path)
            # Other files (README, MANIFEST.tsv) are not inputs; a broken or looping link may have been one.
            if is_structure_file(path) or (problem is not None and os.path.islink(path)):
                entries.append((path, problem))
    entries.sort(key=lambda entry: entry[0])
    return [path if problem is None else Skipped(str(path), None, problem) for path, problem in entries]


def _structure_files(location: str, path: Path) -> list[Path | Skipped]:
    if path.is_dir():
        return _walk(path)
    if os.path.lexists(path):
        return [path]
    out: list[Path | Skipped] = []
    for match in sorted(Path(p) for p in glob.glob(location, recursive=True)):
        problem = path_problem(match)
        if problem is not None and (is_structure_file(match) or os.path.islink(match)):
            out.append(Skipped(str(match), None, problem))
        elif problem is None and match.is_file() and is_structure_file(match):
            out.append(match)
    return out


def _structure_options(source: Source, **defaults: object) -> StructureOptions:
    values: dict[str, object] = dict(defaults)
    for name, convert in (("min_length", int), ("cutoff", float), ("dssp", _flag)):
        if name in source.options:
            values[name] = source._take(name, convert)
    if "chains" in source.options:
        values["chains"] = _plus_list(source.options["chains"])
    if "binding_sites" in source.options:
        if source.options["binding_sites"] not in BINDING_SITE_SOURCES:
            raise SourceError(f"{source.text}: binding_sites must be one of {', '.join(BINDING_SITE_SOURCES)}")
        values["binding_sites"] = source.options["binding_sites"]
    if "partner" in source.options:
        values["partner"] = source.options["partner"].replace("+", ",")
    return StructureOptions(**values)  # type: ignore[arg-type]


def _read_structures(source: Source, path: Path) -> Iterator[Protein | Skipped]:
    files = _structure_files(source.location, path)
    if not files:
        raise SourceError(f"{source.location}: no PDB/mmCIF files found (nor a dataset, FASTA or database)")
    options = _structure_options(source)
    for file in files:
        if isinstance(file, Skipped):
            yield file
        else:
            yield from read_structure_file(file, options)


def _read_promod3(source: Source, path: Path) -> Iterator[Protein | Skipped]:
    try:
        db = StructureDB(path)
    except ProteinError as error:
        raise SourceError(str(error)) from None
    ids = None
    if "ids" in source.options:
        value = source.options["ids"]
        ids_path = Path(value)
        ids = ids_path.read_text().split() if ids_path.is_file() else list(_plus_list(value))
    yield from db.iter_records(
        min_length=int(source._take("min_length", int, 0)),  # type: ignore[arg-type]
        max_length=source._take("max_length", int),  # type: ignore[arg-type]
        ids=ids,
    )


def _manifest_chains(value: str) -> list[str]:
    # Columns hold chain ids, possibly with a note in brackets, e.g. "B(scFv)" or "H L".
    return [item.split("(")[0] for item in value.replace(",", " ").split() if item.split("(")[0]]


def _read_antibodies(source: Source, path: Path) -> Iterator[Protein | Skipped]:
    files = {p.name: p for p in path.rglob("*.pdb")}
    options = _structure_options(source, min_length=80)
    with open(path / "MANIFEST.tsv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if row.get("role") == "bound_antibody"]
    for row in rows:
        file = files.get(row["file"])
        if file is None:
            yield Skipped(str(path / row["file"]), None, "listed in MANIFEST.tsv but not found")
            continue
        partner = files.get(row["partner_file"])
        if partner is None:
            yield Skipped(str(file), None, f"partner file {row['partner_file']} not found")
            continue
        chain_types = {}
        for column, kind in (("heavy_chains", "heavy"), ("light_chains", "light")):
            chain_types.update(dict.fromkeys(_manifest_chains(row.get(column, "")), kind))
        for item in row.get("other_antibody_chains", "").split():
            chain, _, note = item.partition("(")
            chain_types[chain] = note.rstrip(")") or "other"
        file_options = StructureOptions(
            min_length=options.min_length,
            chains=tuple(chain_types),
            binding_sites="partner",
            cutoff=options.cutoff,
            partner=str(partner),
            dssp=options.dssp,
        )
        for record in read_structure_file(file, file_options):
            if isinstance(record, Protein):
                record.meta["chain_type"] = chain_types.get(record.chain or "", "other")
                record.meta["antibody_format"] = row.get("antibody_format", "")
            yield record


def _read_protein_set(source: Source, path: Path) -> Iterator[Protein | Skipped]:
    try:
        yield from read_protein_set(path)
    except ProteinError as error:
        raise SourceError(str(error)) from None


_READERS: dict[str, Callable[[Source, Path], Iterator[Protein | Skipped]]] = {
    "antibodies": _read_antibodies,
    "promod3": _read_promod3,
    "dataset": lambda source, path: read_dataset(path),
    "fasta": lambda source, path: read_fasta(path),
    "proteinset": _read_protein_set,
    "structures": _read_structures,
}


def iter_records(source: str | Source) -> Iterator[Protein | Skipped]:
    """Every record of a SOURCE, as `Protein` or `Skipped` (see the module docstring for the syntax).

    Raises
    ------
    SourceError
        Before yielding anything, when the location does not exist or an option is unknown or bad.
    """
    source = source if isinstance(source, Source) else Source.parse(source)
    path = source.path()
    if os.path.lexists(path):
        problem = path_problem(path)
        if problem is not None:
            raise SourceError(f"{source.location}: {problem}")
    elif not glob.glob(source.location, recursive=True):
        raise SourceError(f"{source.location}: no such file, directory or glob match")
    kind = detect_kind(path)
    allowed = _KIND_OPTIONS[kind] | {"limit", "variable_domain", "antibody", "chain_type"} | set(annotator_options())
    unknown = sorted(set(source.options) - allowed)
    if unknown:
        raise SourceError(
            f"{source.text}: option(s) {', '.join(unknown)} do not apply to a {kind} source "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    limit = source._take("limit", int)
    fv = bool(source._take("variable_domain", _flag, False))
    antibody = bool(source._take("antibody", _flag, False))
    chain_type = source.options.get("chain_type")
    if chain_type is not None and chain_type not in CHAIN_TYPES:
        raise SourceError(f"{source.text}: chain_type must be one of {', '.join(CHAIN_TYPES)}, not {chain_type!r}")
    try:
        check_annotator_options(source.options, source.text)
    except ValueError as error:
        raise SourceError(str(error)) from None
    records = _limited(_READERS[kind](source, path), limit, fv, antibody, chain_type)  # type: ignore[arg-type]
    return annotate(unique_ids(records, source.text), source.options)


def _limited(
    records: Iterator[Protein | Skipped],
    limit: int | None,
    fv: bool,
    antibody: bool = False,
    chain_type: str | None = None,
) -> Iterator[Protein | Skipped]:
    kept = 0
    for record in records:
        if limit is not None and kept >= limit:
            return
        if antibody and isinstance(record, Protein) and not looks_like_variable_domain(record.sequence):
            continue
        if chain_type is not None and isinstance(record, Protein):
            if "chain_type" not in record.meta:
                record.meta["chain_type"] = antibody_chain_type(record.sequence) or "other"
            if record.meta["chain_type"] != chain_type:
                continue
        if fv and isinstance(record, Protein):
            try:
                record = cut_variable_domain(record)
            except ProteinError as error:
                record = Skipped(record.source, record.id, str(error).split(": ", 2)[-1])
        if isinstance(record, Protein):
            kept += 1
        yield record


def iter_proteins(
    source: str | Source,
    on_skip: Callable[[Skipped], None] | None = None,
    limit: int | None = None,
) -> Iterator[Protein]:
    """The proteins of a SOURCE; skipped records go to `on_skip` (default: ignored).

    Parameters
    ----------
    source : str or Source
        See the module docstring.
    on_skip : callable, optional
        Called with each `Skipped` record, e.g. to log it or collect it.
    limit : int, optional
        Stop after this many proteins (also settable as the ``limit`` option).
    """
    kept = 0
    for record in iter_records(source):
        if isinstance(record, Skipped):
            if on_skip is not None:
                on_skip(record)
            continue
        if limit is not None and kept >= limit:
            return
        kept += 1
        yield record


def load_proteins(source: str | Source, limit: int | None = None) -> tuple[list[Protein], list[Skipped]]:
    """All proteins of a SOURCE in a list, with the skipped records."""
    skipped: list[Skipped] = []
    proteins = list(iter_proteins(source, on_skip=skipped.append, limit=limit))
    return proteins, skipped
