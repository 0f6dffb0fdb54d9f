"""Antibody chain types: read from sequences and the antibody MANIFEST, selected in sources, given to IgLM
as its chain tag, and warned about when a Sapiens model runs on the other chain type."""

from __future__ import annotations

import warnings

import pytest

from models_fixtures import IGLM_VOCAB
from plmlens.models import ChainTypeWarning, load_model
from plmlens.models.tokenizers import fixed_vocab_tokenizer
from plmlens.proteins import Protein, SourceError, iter_proteins
from plmlens.proteins.annotations import antibody_chain_type

# Trastuzumab's variable domains (public, INN 8289): human VH and κ VL.
HEAVY = (
    "EVQLVESGGGLVQPGGSLRLSCAASGFNIKDTYIHWVRQAPGKGLEWVARIYPTNGYTRYADSVKGRFTISADTSKNTAYLQMNSLRAEDTAVYYCSRWGGDGFYAM"
    "DYWGQGTLVTVSS"
)
LIGHT = "DIQMTQSPSSLSASVGDRVTITCRASQDVNTAVAWYQQKPGKAPKLLIYSASFLYSGVPSRFSGSRSGTDFTLTISSLQPEDFATYYCQQHYTTPPTFGQGTKVEIK"
LYSOZYME = (
    "KVFGRCELAAAMKRHGLDNYRGYSLGNWVCAAKFESNFNTQATNRNTDGSTDYGILQINSRWWCNDGRTPGSRNLCNIPCSALLSSDITASVNCAKKIVSDGNGMNAW"
)


def test_chain_type_from_sequence():
    assert antibody_chain_type(HEAVY) == "heavy"
    assert antibody_chain_type(LIGHT) == "light"
    assert antibody_chain_type(LYSOZYME) is None
    # The J-region motif and the core must agree: a heavy core with a light J region is neither.
    assert antibody_chain_type(HEAVY.replace("WGQG", "FGQG")) is None


def test_chain_type_option_selects_chains(tmp_path):
    fasta = tmp_path / "mixed.fasta"
    fasta.write_text(f">h\n{HEAVY}\n>l\n{LIGHT}\n>lyz\n{LYSOZYME}\n")
    heavy = list(iter_proteins(f"{fasta}::chain_type=heavy"))
    light = list(iter_proteins(f"{fasta}::chain_type=light,variable_domain"))
    assert [p.id for p in heavy] == ["h"] and heavy[0].meta["chain_type"] == "heavy"
    assert [p.id for p in light] == ["l"] and light[0].meta["chain_type"] == "light"
    assert len(list(iter_proteins(str(fasta)))) == 3
    with pytest.raises(SourceError, match="chain_type must be one of heavy, light"):
        list(iter_proteins(f"{fasta}::chain_type=kappa"))


def test_chain_prefixes_pick_each_proteins_tag():
    tokenizer = fixed_vocab_tokenizer(
        IGLM_VOCAB, prefix=["[HEAVY]", "[HUMAN]"], suffix=["[SEP]"], pad="[PAD]", mask=None,
        chain_prefixes={"heavy": ["[HEAVY]", "[HUMAN]"], "light": ["[LIGHT]", "[HUMAN]"]},
    )  # fmt: skip
    encoding = tokenizer.encode([("a", "ACD"), ("b", "ACDE"), ("c", "AC")], 16, chain_types=["light", None, "heavy"])
    tags = encoding.input_ids[:, 0].tolist()
    assert tags == [IGLM_VOCAB.index("[LIGHT]"), IGLM_VOCAB.index("[HEAVY]"), IGLM_VOCAB.index("[HEAVY]")]
    assert encoding.starts.tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="as long as the prefix"):
        fixed_vocab_tokenizer(IGLM_VOCAB, prefix=["[HEAVY]", "[HUMAN]"], suffix=[], pad="[PAD]", mask=None,
                              chain_prefixes={"light": ["[LIGHT]"]})  # fmt: skip


@pytest.mark.integration
def test_iglm_gets_the_chain_tag_of_each_protein():
    adapter = load_model("iglm")
    # The MANIFEST's type wins over the sequence's; plain strings are read from their sequence.
    labelled = Protein(id="x", sequence=HEAVY, meta={"chain_type": "light"})
    encoding = adapter.encode([HEAVY, LIGHT, LYSOZYME, labelled])
    light, heavy = IGLM_VOCAB.index("[LIGHT]"), IGLM_VOCAB.index("[HEAVY]")
    assert encoding.input_ids[:, 0].tolist() == [heavy, light, heavy, light]
    assert (encoding.input_ids[:, 1] == IGLM_VOCAB.index("[HUMAN]")).all()


@pytest.mark.integration
def test_sapiens_warns_once_on_the_other_chain_type():
    heavy_model = load_model("sapiens-heavy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChainTypeWarning)
        heavy_model.encode([HEAVY, LYSOZYME])  # its own type and a non-antibody: no warning
    with pytest.warns(ChainTypeWarning, match="trained on heavy chains; running it on light chains"):
        heavy_model.encode([HEAVY, LIGHT])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChainTypeWarning)
        heavy_model.encode([LIGHT])  # said once per model and type
    with pytest.warns(ChainTypeWarning, match="trained on light chains"):
        load_model("sapiens-light").encode([HEAVY])


@pytest.mark.integration
def test_antibody_manifest_chain_types_select_chains(shared_data):
    source = f"{shared_data / 'antibodies'}::variable_domain,dssp=false,limit=20"
    for kind in ("heavy", "light"):
        proteins = list(iter_proteins(f"{source},chain_type={kind}"))
        assert len(proteins) == 20 and {p.meta["chain_type"] for p in proteins} == {kind}
        # The MANIFEST agrees with the sequence wherever the sequence says.
        assert {antibody_chain_type(p.sequence) for p in proteins} <= {kind, None}
