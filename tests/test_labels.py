"""Open per-residue labels: the record, the registries, protein sets, SOURCE annotators, properties,
describe and probing tasks, on tiny synthetic proteins whose answers are counted by hand."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from plmlens.analysis import Accumulator, AnalysisResult, get_properties
from plmlens.analysis import properties as properties_module
from plmlens.cli import app
from plmlens.probing.tasks import HEADLINES, BindingSiteTask, LabelTask, known_tasks, make_tasks
from plmlens.proteins import Protein, ProteinError, Skipped, SourceError, describe, iter_records
from plmlens.proteins import labels as labels_module
from plmlens.proteins.archive import array_checksum
from plmlens.proteins.labels import Annotator, LabelSpec, annotate, label_spec, register_annotator, register_label
from plmlens.proteins.store import FORMAT, read_protein_set, save_protein_set


@pytest.fixture
def registry():
    """Restore the label, annotator and property registries after a test registers its own."""
    saved = (dict(labels_module.LABELS), dict(labels_module.ANNOTATORS), dict(properties_module.PROPERTIES),
             {k: list(v) for k, v in properties_module._LABEL_PROPERTIES.items()})  # fmt: skip
    yield
    for live, old in zip(
        (labels_module.LABELS, labels_module.ANNOTATORS, properties_module.PROPERTIES,
         properties_module._LABEL_PROPERTIES), saved, strict=True,
    ):  # fmt: skip
        live.clear()
        live.update(old)


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, message
    return message


# ---- the record ---------------------------------------------------------------------------------------------


def test_add_label_bool_and_category_with_undefined_residues():
    protein = Protein(id="P", sequence="ACDE", source="p.pdb")
    protein.add_label("site", np.array([True, False, True, False]), defined=np.array([True, True, False, True]))
    protein.add_label("zone", ["a", "b", "a", "c"])
    site, zone = protein.label("site"), protein.label("zone")
    assert site.dtype == bool and site.mask.tolist() == [False, False, True, False]
    assert site.filled(False).tolist() == [True, False, False, False]  # undefined is masked, never read as True
    assert zone.dtype.kind == "U" and zone.tolist() == ["a", "b", "a", "c"] and not zone.mask.any()
    assert protein.label("nothing") is None
    assert repr(protein) == "Protein(id='P', length=4, with_coords=0, labels=['site', 'zone'])"
    # A masked array's own mask marks undefined residues too.
    protein.add_label("site", np.ma.MaskedArray([True, True, False, False], mask=[0, 1, 0, 0]))
    assert protein.label("site").mask.tolist() == [False, True, False, False]


@pytest.mark.parametrize(
    "name, values, defined, pattern",
    [
        ("1st", [True] * 3, None, r"label name '1st' is not an identifier"),
        ("a-b", [True] * 3, None, r"label name 'a-b' is not an identifier"),
        ("x" * 65, [True] * 3, None, r"is not an identifier of at most 64 characters"),
        ("ok", [True] * 2, None, r"label ok: has shape \(2,\), expected \(3,\)"),
        ("ok", [1, 0, 2], None, r"label ok: values must be bool or str, not int64"),
        ("ok", [1.0, 0.0, 1.0], None, r"values must be bool or str, not float64"),
        ("ok", [True] * 3, [1, 1, 0], r"defined must be bool of shape \(3,\)"),
        ("ok", [True] * 3, [True, False], r"defined must be bool of shape \(3,\)"),
        ("ptm", ["a", "b", "c"], None, r"label ptm: values are category, but the label is registered as bool"),
        ("amino_acid", [True] * 3, None, r"values are bool, but the label is registered as category"),
    ],
)
def test_add_label_refuses_bad_input_in_one_line_naming_the_record(name, values, defined, pattern):
    protein = Protein(id="P7", sequence="ACD", source="x.pdb")
    with pytest.raises(ProteinError) as caught:
        protein.add_label(name, values, defined=None if defined is None else np.asarray(defined))
    message = one_line(caught.value)
    assert message.startswith("x.pdb: P7: ") and re.search(pattern, message), message
    assert protein.labels == {}


def test_binding_site_and_ptm_keywords_are_labels():
    protein = Protein(id="P", sequence="ACDE", binding_site=[0, 1, 1, 0], ptm=np.array([1, 0, 0, 0]))
    assert set(protein.labels) == {"binding_site", "ptm"}
    assert protein.binding_site.dtype == bool and protein.binding_site.tolist() == [False, True, True, False]
    assert protein.ptm.tolist() == [True, False, False, False]
    assert Protein(id="Q", sequence="AC").binding_site is None
    # dataclasses.replace keeps every label, and a keyword given to it wins.
    copy = dataclasses.replace(protein, id="R")
    assert copy.binding_site.tolist() == [False, True, True, False] and copy.labels is not protein.labels
    copy.add_label("extra", [True] * 4)
    assert "extra" not in protein.labels
    assert dataclasses.replace(protein, binding_site=None).binding_site is None
    assert dataclasses.replace(protein, ptm=[0, 0, 0, 1]).ptm.tolist() == [False, False, False, True]
    # A partly undefined stored label keeps its mask through replace (the attribute reads it as False).
    protein.add_label("binding_site", [True, True, True, True], defined=np.array([True, False, True, True]))
    assert protein.binding_site.tolist() == [True, False, True, True]
    assert dataclasses.replace(protein, id="S").label("binding_site").mask.tolist() == [False, True, False, False]
    protein.ptm = None
    assert "ptm" not in protein.labels


def test_subset_and_first_keep_every_label_aligned():
    protein = Protein(id="P", sequence="ACDEF", dssp="HHE-?", binding_site=[1, 0, 0, 1, 0])
    protein.add_label("zone", ["a", "b", "c", "d", "e"], defined=np.array([True, True, False, True, True]))
    cut = protein.subset(np.array([0, 2, 3]))
    assert cut.binding_site.tolist() == [True, False, True]
    assert cut.label("zone").tolist() == ["a", None, "d"]
    assert cut.label("secondary_structure").tolist() == ["helix", "strand", "other"]
    first = protein.first(2)
    assert first.label("zone").tolist() == ["a", "b"] and first.binding_site.tolist() == [True, False]
    assert len(protein.label("zone")) == 5  # the original is untouched


def test_derived_labels_secondary_structure_and_amino_acid(registry):
    protein = Protein(id="P", sequence="ACXW", dssp="GB S?"[:4].replace(" ", "-"))
    ss = protein.label("secondary_structure")
    assert ss.tolist() == ["helix", "strand", "other", "turn_bend"]
    assert protein.label("amino_acid").tolist() == ["A", "C", "X", "W"]
    assert Protein(id="N", sequence="AC").label("secondary_structure").mask.all()  # no DSSP: all undefined
    # A stored label wins over the derivation.
    protein.add_label("secondary_structure", ["other"] * 4)
    assert protein.label("secondary_structure").tolist() == ["other"] * 4
    register_label(LabelSpec("is_gly", "bool", "glycines", derive=lambda p: np.array([c == "G" for c in p.sequence])))
    assert Protein(id="G", sequence="GAG").label("is_gly").tolist() == [True, False, True]
    assert label_spec("is_gly").kind == "bool"
    with pytest.raises(KeyError, match="unknown label 'nope'"):
        label_spec("nope")


# ---- protein sets -------------------------------------------------------------------------------------------


def labelled_records() -> list[Protein | Skipped]:
    a = Protein(id="a", sequence="ACDEF", dssp="HHE-T", binding_site=[0, 1, 0, 0, 1])
    a.add_label("zone", ["core", "rim", "", "core", "support"], defined=np.array([1, 1, 0, 1, 1], dtype=bool))
    b = Protein(id="b", sequence="GHI", ptm=[1, 0, 0])
    c = Protein(id="c", sequence="KLMN")
    c.add_label("zone", ["rim"] * 4)
    c.add_label("flag", [True, False, True, False], defined=np.array([1, 0, 1, 1], dtype=bool))
    return [a, Skipped("y.pdb", "B", "too short"), b, c]


def members(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def rewrite(path: Path, arrays: dict[str, np.ndarray], header: dict | None = None, checksum: bool = True) -> None:
    arrays = dict(arrays)
    raw = arrays.pop("__index__")
    index = json.loads(str(raw)) if header is None else header
    if checksum:
        index["checksum"] = array_checksum(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, __index__=np.array(json.dumps(index)), **arrays)
    path.write_bytes(buffer.getvalue())


def test_labels_round_trip_through_a_protein_set(tmp_path):
    original = labelled_records()
    path = save_protein_set(original, tmp_path / "s.proteins.npz")
    stored = members(path)
    header = json.loads(str(stored["__index__"]))
    assert header["format"] == FORMAT == "plmlens-proteins/2"
    assert [r.get("labels") for r in header["records"]] == [["binding_site", "zone"], None, ["ptm"], ["zone", "flag"]]
    assert stored["label.zone.values"].dtype.kind == "U" and stored["label.zone.values"].shape == (9,)
    assert all(array.dtype.kind != "O" for array in stored.values())
    assert stored["label.flag.defined"].tolist() == [True, False, True, True]
    back = list(read_protein_set(path))
    assert isinstance(back[1], Skipped) and back[1].reason == "too short"
    for before, after in zip([original[i] for i in (0, 2, 3)], [back[i] for i in (0, 2, 3)], strict=True):
        assert list(after.labels) == list(before.labels)
        for name, label in before.labels.items():
            assert after.labels[name].dtype.kind == label.dtype.kind
            assert after.labels[name].tolist() == label.tolist()
            assert after.labels[name].mask.tolist() == np.ma.getmaskarray(label).tolist()
    assert back[0].binding_site.tolist() == [False, True, False, False, True] and back[0].ptm is None
    assert back[0].label("zone").tolist() == ["core", "rim", None, "core", "support"]


def test_a_version_1_set_is_read_with_its_labels(tmp_path):
    arrays = {
        "residue_numbers": np.arange(1, 6, dtype=np.int64), "insertion_codes": np.full(5, "", dtype="<U1"),
        "ca": np.full((5, 3), np.nan, dtype=np.float32), "cb": np.full((5, 3), np.nan, dtype=np.float32),
        "has_coords": np.zeros(5, dtype=bool), "binding_site": np.array([0, 1, 1, 0, 0], dtype=bool),
        "ptm": np.array([0, 0, 0, 0, 1], dtype=bool),
    }  # fmt: skip
    records = [
        {"id": "a", "sequence": "ACD", "source": "a", "chain": None, "dssp": None, "binding_site": True,
         "ptm": False, "meta": {}},
        {"skipped": {"file": "z.pdb", "chain": None, "reason": "empty"}},
        {"id": "b", "sequence": "EF", "source": "b", "chain": "B", "dssp": "HE", "binding_site": False,
         "ptm": True, "meta": {"k": 1}},
    ]  # fmt: skip
    path = tmp_path / "old.proteins.npz"
    header = {"format": "plmlens-proteins/1", "source": "old", "records": records, "checksum": array_checksum(arrays)}
    rewrite(path, {"__index__": np.array("{}"), **arrays}, header=header, checksum=False)
    a, skipped, b = read_protein_set(path)
    assert a.binding_site.tolist() == [False, True, True] and a.ptm is None and list(a.labels) == ["binding_site"]
    assert b.ptm.tolist() == [False, True] and b.binding_site is None and b.meta == {"k": 1}
    assert skipped.reason == "empty"
    # Saved again, it is a /2 set with the same labels.
    again = list(read_protein_set(save_protein_set([a, b], tmp_path / "new.proteins.npz")))
    assert again[0].binding_site.tolist() == [False, True, True] and again[1].ptm.tolist() == [False, True]


@pytest.mark.parametrize(
    "damage, pattern",
    [
        (
            lambda m, h: m.update({"label.zone.values": m["label.zone.values"][:-1]}),
            r"array label\.zone\.values is <U7\[8\], expected bool or unicode\[9\]",
        ),
        (
            lambda m, h: m.update({"label.flag.defined": m["label.flag.defined"].astype(np.int8)}),
            r"array label\.flag\.defined is int8\[4\], expected bool\[4\]",
        ),
        (lambda m, h: m.update({"label.zone.values": np.arange(9)}), r"label\.zone\.values is int64\[9\]"),
        (lambda m, h: m.pop("label.flag.defined"), r"arrays missing: \['label\.flag\.defined'\]"),
        (lambda m, h: m.update({"label.x.y": np.zeros(1)}), r"unexpected: \['label\.x\.y'\]"),
        (lambda m, h: h["records"][2].update(labels=["ptm", "ghost"]), r"record 2: no arrays for label 'ghost'"),
        (lambda m, h: h["records"][2].update(labels=["ptm", "ptm"]), r"record 2: labels is not a list of distinct"),
        (
            lambda m, h: h["records"][0].update(labels=["binding_site"]),
            r"label\.zone\.values is <U7\[9\], expected .*\[4\]",
        ),
        (lambda m, h: h["records"][3].pop("labels"), r"record 3 has no labels"),
        (
            lambda m, h: m.update({"label.binding_site.values": np.full(5, "x")}),
            r"record 0: label binding_site: values are category, but the label is registered as bool",
        ),
    ],
)
def test_damaged_label_arrays_are_one_line_naming_the_file(tmp_path, damage, pattern):
    path = save_protein_set(labelled_records(), tmp_path / "d.proteins.npz")
    arrays = members(path)
    header = json.loads(str(arrays["__index__"]))
    damage(arrays, header)
    rewrite(path, arrays, header=header)
    with pytest.raises(SourceError) as caught:
        list(iter_records(str(path)))
    message = one_line(caught.value)
    assert message.startswith(str(path)) and re.search(pattern, message), message


def test_damaged_label_values_fail_their_checksum(tmp_path):
    path = save_protein_set(labelled_records(), tmp_path / "c.proteins.npz")
    arrays = members(path)
    arrays["label.flag.values"] = ~arrays["label.flag.values"]
    rewrite(path, arrays, checksum=False)
    with pytest.raises(ProteinError, match=r"do not match their checksum"):
        list(read_protein_set(path))


def test_a_label_bool_in_one_record_and_categorical_in_another_is_refused(tmp_path):
    a, b = Protein(id="a", sequence="AC"), Protein(id="b", sequence="DE")
    a.add_label("mix", [True, False])
    b.add_label("mix", ["x", "y"])
    with pytest.raises(ProteinError, match=r"b: label mix is categorical here and bool in an earlier record"):
        save_protein_set([a, b], tmp_path / "m.proteins.npz")


# ---- annotators through a SOURCE ----------------------------------------------------------------------------


def mark_cys(proteins, value):
    """The toy annotator: ``cys`` marks cysteines (undefined at X); ``fail`` cannot label proteins with a W."""
    for protein in proteins:
        if value == "fail" and "W" in protein.sequence:
            labels_module.mark_unlabelled(protein, "toy", "has a tryptophan\nsecond line")
            continue
        letters = np.array(list(protein.sequence))
        protein.add_label("cys", letters == "C", defined=letters != "X")
        protein.add_label("kind", np.where(letters == "C", "thiol", "plain"))


@pytest.fixture
def toy(registry, tmp_path):
    register_label(LabelSpec("cys", "bool", "cysteines", label="Cys"))
    register_label(LabelSpec("kind", "category", "side-chain kind", categories=("thiol", "plain"),
                             properties=("thiol",), family="toys"))  # fmt: skip
    register_annotator(Annotator("toy", "marks cysteines", option="toy_marks", choices=("cys", "fail"),
                                 labels=("cys", "kind"), function=mark_cys))  # fmt: skip
    fasta = tmp_path / "toy.fasta"
    fasta.write_text(">p1\nACCA\n>p2\nWCXC\n>p3\nGGGG\n")
    return fasta


def test_an_annotator_runs_through_its_source_option(toy):
    records = list(iter_records(f"{toy}::toy_marks=cys"))
    assert [r.id for r in records] == ["p1", "p2", "p3"]
    assert records[0].label("cys").tolist() == [False, True, True, False]
    assert records[1].label("cys").tolist() == [False, True, None, True]
    assert records[2].label("kind").tolist() == ["plain"] * 4
    assert "cys" not in next(iter(iter_records(str(toy)))).labels  # without the option, no annotator runs


def test_annotator_options_are_checked_in_one_line(toy):
    with pytest.raises(SourceError) as caught:
        iter_records(f"{toy}::toy_marks=all")
    assert re.fullmatch(
        r".*toy\.fasta::toy_marks=all: toy_marks must be one of cys, fail, not 'all'", one_line(caught.value)
    )
    with pytest.raises(SourceError, match=r"option\(s\) toy_markz do not apply"):
        iter_records(f"{toy}::toy_markz=cys")


def test_unlabelled_proteins_keep_their_records_with_the_reason(toy):
    records = list(iter_records(f"{toy}::toy_marks=fail"))
    assert [r.id for r in records] == ["p1", "p2", "p3"]
    assert "cys" not in records[1].labels and records[1].label("cys") is None
    assert records[1].meta["unlabelled"] == {"toy": "has a tryptophan second line"}
    assert "unlabelled" not in records[0].meta


def test_annotate_keeps_order_in_batches_and_survives_a_failing_annotator(registry):
    seen = []

    def crashing(proteins, value):
        seen.append([p.id for p in proteins])
        if any(p.id == "p3" for p in proteins):
            raise RuntimeError("model exploded")
        for p in proteins:
            p.add_label("ok", [True] * len(p))

    register_annotator(Annotator("crash", "crashes", option="crash", choices=None, labels=("ok",), function=crashing))
    records = [Protein(id=f"p{i}", sequence="AC") for i in range(5)]
    records.insert(2, Skipped("s.pdb", None, "bad"))
    out = list(annotate(records, {"crash": "x"}, batch_size=2))
    assert out == records  # the same objects, in order, the skipped one included
    assert seen == [["p0", "p1"], ["p2", "p3"], ["p4"]]  # batches of 2 proteins
    assert [("ok" in p.labels) for p in out if isinstance(p, Protein)] == [True, True, False, False, True]
    assert out[4].meta["unlabelled"] == {"crash": "RuntimeError: model exploded"}


# ---- properties, analysis, describe, probing ----------------------------------------------------------------


def test_a_label_registered_after_import_becomes_properties(toy):
    cys, thiol = get_properties(["cys", "kind_thiol"])
    assert (cys.kind, cys.label, thiol.label, thiol.family) == ("token", "Cys", "kind: thiol", "toys")
    assert "kind_plain" not in properties_module.PROPERTIES  # only the chosen categories
    protein = next(iter(iter_records(f"{toy}::toy_marks=cys,limit=2")))
    values, defined = cys.mask(protein)
    assert values.tolist() == [False, True, True, False] and defined.all()
    values, defined = cys.mask(Protein(id="none", sequence="CC"))  # without the label: undefined
    assert not defined.any()
    # The paper's properties come from labels with their names, labels and order unchanged.
    names = list(properties_module.PROPERTIES)
    assert names[4:9] == ["binding_site", "ptm", "helix", "strand", "turn_bend"] and names[9] == "aa_A"
    assert properties_module.PROPERTIES["turn_bend"].description == "attention to turn/bend residues (T, S)"


def test_a_registered_label_reaches_the_accumulator(toy):
    protein = Protein(id="p", sequence="ACCA")
    protein.add_label("cys", [False, True, True, False], defined=np.array([True, True, True, False]))
    attention = torch.zeros(1, 1, 4, 4)
    attention[0, 0, 0, 1] = attention[0, 0, 2, 3] = attention[0, 0, 3, 2] = 0.9  # 3 arcs; 3 → 2 hits a Cys
    acc = Accumulator(1, 1, ["cys"])
    batch = acc.start_batch([protein], [4], positions=[0])
    batch.add_layer(0, attention)
    acc.commit(batch)
    row = AnalysisResult(acc).heads().iloc[0]
    # Arcs to residue 3 (undefined) are left out: 2 arcs, both to a cysteine; background 2 of 3 defined.
    assert row.property == "cys" and (row.n_arcs, row.n_hits) == (2, 2) and row.background == pytest.approx(2 / 3)


def test_describe_counts_labels_present_and_unlabelled_reasons(toy, tmp_path):
    path = tmp_path / "toy.proteins.npz"
    save_protein_set(iter_records(f"{toy}::toy_marks=fail"), path)
    result = CliRunner().invoke(app, ["proteins", "describe", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    counts = payload["counts"]
    # p1 ACCA and p3 GGGG are labelled (8 residues, 2 Cys); p2 has a W: unlabelled, undefined.
    assert counts["cys"] == {"hits": 2, "total": 8} and counts["kind_thiol"] == {"hits": 2, "total": 8}
    assert counts["binding_site"] == {"hits": 0, "total": 0} and counts["aa_C"] == {"hits": 4, "total": 12}
    assert list(counts)[-2:] == ["cys", "kind_thiol"]
    assert payload["unlabelled"] == {"toy": {"has a tryptophan second line": 1}}
    table = CliRunner().invoke(app, ["proteins", "describe", str(path), "--format", "table"])
    assert "toy: 1 proteins unlabelled (1 has a tryptophan second line)" in table.output
    # Without the annotator's labels, describe adds nothing.
    plain = describe(iter_records(str(toy)), counters={"aa_C": get_properties(["aa_C"])[0].count})
    assert list(plain.counters) == ["aa_C"] and plain.unlabelled == {}


def test_every_label_property_is_a_probe_task(toy):
    tasks = known_tasks()
    assert tasks[:4] == ("secondary_structure", "binding_site", "contact", "contact_regression")
    assert {"ptm", "helix", "aa_C", "cys", "kind_thiol"} <= set(tasks)
    made = make_tasks(["cys", "binding_site", "ptm"], 5)
    assert [type(t) for t in made] == [BindingSiteTask, LabelTask, LabelTask]
    assert [t.task for t in made] == ["binding_site", "ptm", "cys"]
    assert HEADLINES["cys"].metric == "precision_at_L/20" and HEADLINES["cys"].label == "Cys"
    with pytest.raises(ValueError, match="unknown probing task"):
        make_tasks(["nope"], 5)
