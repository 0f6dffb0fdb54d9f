"""plmlens.models on tiny random models with each registry architecture's real tokeniser conventions."""

from __future__ import annotations

import gc
import json
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from models_fixtures import ESM_VOCAB, IGLM_VOCAB, PROTBERT_VOCAB, SPM_ORDER, word_level_tokenizer
from plmlens.models import (
    ModelLoadError,
    SequenceError,
    TruncationWarning,
    load_model,
    registry_rows,
)
from plmlens.models.hf import FAMILIES
from plmlens.models.tape import TAPE_IUPAC_VOCAB, map_tape_state_dict
from plmlens.models.tokenizers import PROTTRANS_REPLACEMENTS

ANTIBERTY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"ACDEFGHIKLMNPQRSTVWY"]
SAPIENS_VOCAB = ["<s>", "<pad>", "</s>", "<unk>", *"ACDEFGHIKLMNPQRSTVWY", "<mask>"]
SMALL = {"hidden_act": "gelu", "initializer_range": 0.4}


def _spm_vocab(specials: list[str]) -> list[tuple[str, float]]:
    return [(t, 0.0) for t in specials] + [("\u2581" + c, -1.0 - i) for i, c in enumerate(SPM_ORDER)]


def _build(kind: str, directory: Path | None = None):
    """(model, tokenizer, spaced, replaces rare letters) for one architecture, tiny and random (ESM's
    tokenizer reads a vocabulary file, written into `directory`)."""
    torch.manual_seed(0)
    if kind == "esm":
        if directory is None:
            raise ValueError("the ESM tokenizer needs a directory for its vocabulary file")
        vocab_file = directory / "vocab.txt"
        vocab_file.write_text("\n".join(ESM_VOCAB) + "\n")
        config = transformers.EsmConfig(
            vocab_size=33, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
            max_position_embeddings=66, position_embedding_type="rotary", pad_token_id=1, mask_token_id=32,
            token_dropout=True, initializer_range=0.4,
        )  # fmt: skip
        return transformers.EsmModel(config), transformers.EsmTokenizer(str(vocab_file)), False, False
    if kind == "protbert":
        vocab = {t: i for i, t in enumerate(PROTBERT_VOCAB)}
        tok = transformers.BertTokenizer(vocab=vocab, do_lower_case=False)
        config = transformers.BertConfig(
            vocab_size=30, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
            max_position_embeddings=64, **SMALL,
        )  # fmt: skip
        return transformers.BertModel(config), tok, True, True
    if kind == "antiberty":
        tok = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(ANTIBERTY_VOCAB)}, do_lower_case=False)
        config = transformers.BertConfig(
            vocab_size=25, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
            max_position_embeddings=64, **SMALL,
        )  # fmt: skip
        return transformers.BertModel(config), tok, True, False
    if kind == "albert":
        tok = transformers.AlbertTokenizer(
            vocab=_spm_vocab(["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]), do_lower_case=False
        )
        config = transformers.AlbertConfig(
            vocab_size=30, embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
            intermediate_size=40, max_position_embeddings=64, num_hidden_groups=1, **SMALL,
        )  # fmt: skip
        return transformers.AlbertModel(config), tok, True, True
    if kind == "xlnet":
        tok = transformers.XLNetTokenizer(
            vocab=_spm_vocab(["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>"]), unk_id=0
        )
        config = transformers.XLNetConfig(
            vocab_size=32, d_model=32, n_layer=2, n_head=4, d_inner=40, ff_activation="gelu",
            initializer_range=0.4, pad_token_id=5,
        )  # fmt: skip
        return transformers.XLNetModel(config), tok, True, True
    if kind == "t5":
        tok = transformers.T5Tokenizer(vocab=_spm_vocab(["<pad>", "</s>", "<unk>"]), extra_ids=0)
        config = transformers.T5Config(
            vocab_size=28, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_heads=4, initializer_factor=2.0,
            is_encoder_decoder=False,
        )  # fmt: skip
        return transformers.T5EncoderModel(config), tok, True, True
    if kind == "sapiens":
        tok = word_level_tokenizer(
            SAPIENS_VOCAB, "<s> $A </s>", ["<s>", "</s>"],
            bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
        )  # fmt: skip
        config = transformers.RobertaConfig(
            vocab_size=25, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
            max_position_embeddings=40, pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5, **SMALL,
        )  # fmt: skip
        return transformers.RobertaModel(config), tok, False, False
    if kind == "iglm":
        tok = word_level_tokenizer(
            IGLM_VOCAB, "[HEAVY] [HUMAN] $A [SEP]", ["[HEAVY]", "[HUMAN]", "[SEP]"],
            pad_token="[PAD]", unk_token="[UNK]", sep_token="[SEP]", mask_token="[MASK]",
        )  # fmt: skip
        config = transformers.GPT2Config(
            vocab_size=33, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.4,
            bos_token_id=None, eos_token_id=None,
        )  # fmt: skip
        return transformers.GPT2Model(config), tok, False, False
    raise AssertionError(kind)


KINDS = ["protbert", "antiberty", "albert", "xlnet", "t5", "esm", "sapiens", "iglm"]


@pytest.fixture(scope="module", params=KINDS)
def tiny(request, tmp_path_factory):
    """A tiny model saved with save_pretrained: (kind, directory, spaced, replaces rare letters)."""
    kind = request.param
    directory = tmp_path_factory.mktemp(kind)
    model, tok, spaced, rare = _build(kind, directory)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return kind, directory, spaced, rare


def _random_sequences(n: int, seed: int, low: int = 5, high: int = 20, letters: str = "ACDEFGHIKLMNPQRSTVWY"):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(letters), size=rng.integers(low, high))) for _ in range(n)]


def _reference(directory: Path, sequence: str, spaced: bool):
    """Attention and hidden states straight from transformers, residues found by the tokenizer itself."""
    config = transformers.AutoConfig.from_pretrained(directory)
    family = FAMILIES[config.model_type]
    model = getattr(transformers, family.model_class).from_pretrained(directory, attn_implementation="eager")
    model.eval()
    tok = transformers.AutoTokenizer.from_pretrained(directory)
    enc = tok(" ".join(sequence) if spaced else sequence, return_special_tokens_mask=True, return_tensors="pt")
    residues = torch.nonzero(enc.pop("special_tokens_mask")[0] == 0).flatten()
    assert len(residues) == len(sequence)
    extra = {"use_mems": False} if config.model_type == "xlnet" else {}
    with torch.no_grad():
        out = model(**enc, output_attentions=True, output_hidden_states=True, **extra)
    attention = [a[0][:, residues][:, :, residues] for a in out.attentions]
    hidden = [h[0][residues] for h in out.hidden_states[1:]]
    return attention, hidden


def test_residue_alignment_batch_independence_and_row_sums(tiny):
    kind, directory, spaced, rare = tiny
    adapter = load_model(directory)
    assert adapter.n_layers == len(adapter._blocks) or kind == "albert"
    sequences = _random_sequences(8, seed=1)
    if rare:
        sequences[0] = "MUKZBOXA" + sequences[0]  # ProtTrans reads U, Z, O, B as X
    ids = [f"p{i}" for i in range(8)]
    layers = list(adapter.iter_layers(sequences, ids, hidden_states=True))
    assert [out.layer for out in layers] == list(range(adapter.n_layers))
    lengths = [len(s) for s in sequences]
    for out in layers:
        assert out.attention.shape == (8, adapter.n_heads, max(lengths), max(lengths))
        assert out.lengths.tolist() == lengths
        assert out.ids == tuple(ids)
        rows = out.attention.sum(-1)
        assert float(rows.max()) <= 1 + 1e-5
        for b, n in enumerate(lengths):
            assert torch.all(out.attention[b, :, n:, :] == 0) and torch.all(out.attention[b, :, :, n:] == 0)
    # Special tokens are dropped without renormalising, so residue rows lose some mass.
    assert min(float(out.attention[0, :, :3].sum(-1).min()) for out in layers) < 0.999
    for b, sequence in enumerate(sequences):
        text = "".join(PROTTRANS_REPLACEMENTS.get(c, c) for c in sequence) if rare else sequence
        attention, hidden = _reference(directory, text, spaced)
        n = len(sequence)
        for k, out in enumerate(layers):
            torch.testing.assert_close(out.attention[b, :, :n, :n], attention[k], atol=1e-5, rtol=0)
            if k < adapter.n_layers - 1:  # some models normalise the last layer's states afterwards
                torch.testing.assert_close(out.hidden[b, :n], hidden[k], atol=1e-4, rtol=1e-5)
    # Alone, each protein gives what it gave in the batch.
    for b in (0, 3, 7):
        alone = list(adapter.iter_layers([sequences[b]], [ids[b]]))
        n = lengths[b]
        for k, out in enumerate(alone):
            torch.testing.assert_close(out.attention[0], layers[k].attention[b, :, :n, :n], atol=1e-5, rtol=0)


def test_padding_side_follows_the_model(tiny):
    kind, directory, _, _ = tiny
    adapter = load_model(directory)
    enc = adapter.encode(["ACDEFGHIK", "MK"])
    pad = adapter.tokenizer.pad_id
    if kind == "xlnet":
        # XLNet puts its special tokens at the end and pads on the left.
        assert enc.input_ids[1, 0] == pad and enc.input_ids[1, -1] != pad
        assert int(enc.starts[1]) == enc.input_ids.shape[1] - 2 - len(adapter.tokenizer.suffix)
    else:
        assert enc.input_ids[1, -1] == pad and enc.input_ids[1, 0] != pad


def test_truncation_is_reported_and_keeps_the_first_residues(tiny):
    _, directory, spaced, _ = tiny
    adapter = load_model(directory)
    long, short = "ACDEFGHIKLMNPQRSTVWY" * 2, "MKV"
    with pytest.warns(TruncationWarning, match="long1"):
        layers = list(adapter.iter_layers([short, long], ["short0", "long1"], max_length=16))
    kept = 16 - adapter.tokenizer.n_special
    assert layers[0].truncated == ("long1",)
    assert layers[0].lengths.tolist() == [3, kept]
    attention, _ = _reference(directory, long[:kept], spaced)
    torch.testing.assert_close(layers[-1].attention[1], attention[-1], atol=1e-5, rtol=0)


def test_attention_and_embed_conveniences():
    directory = _saved("protbert")
    adapter = load_model(directory)
    single = adapter.attention("MKTAYIAK")
    assert single.shape == (3, 4, 8, 8) and single.dtype == np.float32
    batch = list(adapter.iter_layers(["MKTAYIAK", "GG"]))
    np.testing.assert_allclose(single[1], batch[1].attention[0].numpy(), atol=1e-5)
    embedded = adapter.embed(["MKTAYIAK", "GG"], layer=-1)
    assert [e.shape for e in embedded] == [(8, 32), (2, 32)]
    np.testing.assert_allclose(embedded[1], batch[-1].hidden[1, :2].numpy(), atol=1e-5)


def test_layers_are_not_all_kept_alive():
    adapter = load_model(_saved("protbert"))
    refs = []
    for out in adapter.iter_layers(["MKTAYIAKQRQISFVKSHFSRQ"] * 2):
        refs.append(weakref.ref(out.attention))
        del out
        gc.collect()
        if len(refs) >= 3:
            # Two layers back is gone: neither the adapter nor the model holds finished layers.
            assert refs[-3]() is None
    assert len(refs) == 3


def test_stopping_early_releases_the_adapter():
    adapter = load_model(_saved("protbert"))
    for out in adapter.iter_layers(["MKTAYIAK"]):
        assert out.layer == 0
        break
    assert len(list(adapter.iter_layers(["MKTAYIAK"]))) == 3


def test_records_with_ids_are_accepted():
    class Record:
        def __init__(self, id: str, sequence: str) -> None:
            self.id, self.sequence = id, sequence

    adapter = load_model(_saved("protbert"))
    out = next(iter(adapter.iter_layers([Record("1abc.A", "MKTAY"), Record("2xyz.B", "GG")])))
    assert out.ids == ("1abc.A", "2xyz.B")


@pytest.mark.parametrize(
    ("sequence", "message"),
    [("", "empty sequence"), ("MKT1AY", "outside the alphabet"), ("MK-AY", "outside the alphabet")],
)
def test_bad_sequences_name_the_protein(sequence, message):
    adapter = load_model(_saved("antiberty"))
    with pytest.raises(SequenceError, match=message) as caught:
        adapter.iter_layers(["MKTAY", sequence], ["good", "bad_protein_7"])
    assert "bad_protein_7" in str(caught.value)


def test_unknown_letters_follow_the_model_vocabulary():
    antiberty = load_model(_saved("antiberty"))
    # AntiBERTy has no X token; its own BertTokenizer reads X (and U) as [UNK].
    assert antiberty.encode(["AXA"]).input_ids[0, 2] == ANTIBERTY_VOCAB.index("[UNK]")
    assert antiberty.encode(["AUA"]).input_ids[0, 2] == ANTIBERTY_VOCAB.index("[UNK]")
    with pytest.raises(SequenceError, match="outside the alphabet"):
        antiberty.encode(["AJA"])
    protbert = load_model(_saved("protbert"))
    assert protbert.encode(["AUA"]).input_ids.tolist() == protbert.encode(["AXA"]).input_ids.tolist()
    assert protbert.encode(["aka"]).input_ids.tolist() == protbert.encode(["AKA"]).input_ids.tolist()


_SAVED: dict[str, Path] = {}


def _saved(kind: str) -> Path:
    if kind not in _SAVED:
        import tempfile

        model, tok, _, _ = _build(kind)
        directory = Path(tempfile.mkdtemp(prefix=f"plmlens-{kind}-"))
        model.save_pretrained(directory)
        tok.save_pretrained(directory)
        _SAVED[kind] = directory
    return _SAVED[kind]


def test_offline_hub_fails_fast_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as caught:
        load_model("Rostlab/prot_bert")
    message = str(caught.value)
    assert time.monotonic() - start < 10
    assert "\n" not in message
    assert "'Rostlab/prot_bert'" in message and "could not download" in message and "load_model('DIR')" in message


def test_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="cannot be reached"):
        load_model("facebook/esm2_t6_8M_UR50D")
    assert time.monotonic() - start < 10


def test_missing_directory_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="neither a registry name nor an existing model directory"):
        load_model("./no/such/model")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    model, tok, _, _ = _build("protbert")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    weights = next(tmp_path.glob("model*.safetensors"))
    weights.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelLoadError, match="could not load its weights") as caught:
        load_model(tmp_path)
    assert "\n" not in str(caught.value)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    model, tok, _, _ = _build("protbert")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 5  # the weights have 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="does not match"):
        load_model(tmp_path)


# --- TAPE ---------------------------------------------------------------------------------------------

TAPE_CONFIG = {
    "attention_probs_dropout_prob": 0.1, "base_model": "transformer", "finetuning_task": None,
    "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02,
    "input_size": 32, "intermediate_size": 40, "layer_norm_eps": 1e-12, "max_position_embeddings": 128,
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_labels": -1, "output_attentions": False,
    "output_hidden_states": False, "output_size": 32, "pruned_heads": {}, "torchscript": False,
    "type_vocab_size": 1, "vocab_size": 30,
}  # fmt: skip


def _tape_state(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under TAPE's ProteinBertForMaskedLM parameter names (old LayerNorm gamma/beta)."""
    g = torch.Generator().manual_seed(seed)
    d, ff, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.4

    state = {
        "bert.embeddings.word_embeddings.weight": w(v, d),
        "bert.embeddings.position_embeddings.weight": w(config["max_position_embeddings"], d),
        "bert.embeddings.token_type_embeddings.weight": w(config["type_vocab_size"], d),
        "bert.embeddings.LayerNorm.gamma": 1 + w(d) / 4,
        "bert.embeddings.LayerNorm.beta": w(d) / 4,
        "bert.pooler.dense.weight": w(d, d),
        "bert.pooler.dense.bias": w(d),
        "mlm.bias": w(v),
        "mlm.transform.dense.weight": w(d, d),
        "mlm.transform.dense.bias": w(d),
        "mlm.transform.LayerNorm.weight": 1 + w(d) / 4,
        "mlm.transform.LayerNorm.bias": w(d),
        "mlm.decoder.weight": w(v, d),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            state[p + f"attention.self.{name}.weight"] = w(d, d)
            state[p + f"attention.self.{name}.bias"] = w(d)
        state[p + "attention.output.dense.weight"] = w(d, d)
        state[p + "attention.output.dense.bias"] = w(d)
        state[p + "attention.output.LayerNorm.gamma"] = 1 + w(d) / 4
        state[p + "attention.output.LayerNorm.beta"] = w(d) / 4
        state[p + "intermediate.dense.weight"] = w(ff, d)
        state[p + "intermediate.dense.bias"] = w(ff)
        state[p + "output.dense.weight"] = w(d, ff)
        state[p + "output.dense.bias"] = w(d)
        state[p + "output.LayerNorm.gamma"] = 1 + w(d) / 4
        state[p + "output.LayerNorm.beta"] = w(d) / 4
    return state


def _tape_forward(state: dict[str, torch.Tensor], config: dict, sequence: str) -> list[torch.Tensor]:
    """TAPE's ProteinBertModel forward written out from its source (songlab-cal/tape modeling_bert.py)."""
    ids = torch.tensor([TAPE_IUPAC_VOCAB.index(t) for t in ["<cls>", *sequence, "<sep>"]])
    heads, d = config["num_attention_heads"], config["hidden_size"]
    eps = config["layer_norm_eps"]

    def layer_norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return state[prefix + ".gamma"] * (x - u) / torch.sqrt(s + eps) + state[prefix + ".beta"]

    def linear(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return x @ state[prefix + ".weight"].T + state[prefix + ".bias"]

    e = "bert.embeddings."
    x = state[e + "word_embeddings.weight"][ids] + state[e + "position_embeddings.weight"][: len(ids)]
    x = layer_norm(x + state[e + "token_type_embeddings.weight"][0], e + "LayerNorm")
    attentions = []
    for i in range(config["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(len(ids), heads, d // heads).transpose(0, 1)

        q, k, v = (split(linear(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        probs = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, dim=-1)
        attentions.append(probs[:, 1:-1, 1:-1])
        context = (probs @ v).transpose(0, 1).reshape(len(ids), d)
        x = layer_norm(linear(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        inner = torch.nn.functional.gelu(linear(x, p + "intermediate.dense"))
        x = layer_norm(linear(inner, p + "output.dense") + x, p + "output.LayerNorm")
    return attentions


def test_tape_checkpoint_gives_the_attention_of_its_source_weights(tmp_path):
    state = _tape_state(TAPE_CONFIG)
    (tmp_path / "config.json").write_text(json.dumps(TAPE_CONFIG))
    torch.save(state, tmp_path / "pytorch_model.bin")
    adapter = load_model(tmp_path)
    assert (adapter.n_layers, adapter.n_heads, adapter.architecture) == (2, 4, "BERT (TAPE)")
    sequences = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMXUBZ", "AC"]  # TAPE's vocabulary has X, U, B, Z, O
    layers = list(adapter.iter_layers(sequences, hidden_states=False))
    for b, sequence in enumerate(sequences):
        expected = _tape_forward(state, TAPE_CONFIG, sequence)
        n = len(sequence)
        for k, out in enumerate(layers):
            torch.testing.assert_close(out.attention[b, :, :n, :n], expected[k], atol=1e-5, rtol=0)


def test_tape_registry_entry_reads_a_directory(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps(TAPE_CONFIG))
    torch.save(_tape_state(TAPE_CONFIG), tmp_path / "pytorch_model.bin")
    assert load_model("tape-bert", path=tmp_path).n_layers == 2
    monkeypatch.setenv("PLMLENS_TAPE_BERT", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(ModelLoadError, match="no TAPE checkpoint"):
        load_model("tape-bert")


def test_tape_checkpoint_with_a_missing_parameter_is_rejected(tmp_path):
    state = _tape_state(TAPE_CONFIG)
    del state["bert.encoder.layer.1.attention.self.key.weight"]
    (tmp_path / "config.json").write_text(json.dumps(TAPE_CONFIG))
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"missing encoder\.layer\.1\.attention\.self\.key\.weight"):
        load_model(tmp_path)


def test_tape_names_map_onto_bert():
    mapped = map_tape_state_dict(_tape_state(TAPE_CONFIG))
    assert "embeddings.LayerNorm.weight" in mapped and "encoder.layer.0.output.LayerNorm.bias" in mapped
    assert not any(k.startswith(("mlm.", "bert.")) or "gamma" in k for k in mapped)


# --- registry -----------------------------------------------------------------------------------------


def test_registry_lists_the_paper_models_and_the_offline_ones():
    rows = {row["name"]: row for row in registry_rows()}
    assert len(rows) == len(registry_rows())
    for row in rows.values():
        assert set(row) == {"name", "architecture", "layers", "heads", "parameters", "source", "licence"}
    assert (rows["prot-bert"]["layers"], rows["prot-bert"]["heads"]) == (30, 16)
    assert (rows["prot-albert"]["layers"], rows["prot-albert"]["heads"]) == (12, 64)
    assert (rows["prot-xlnet"]["architecture"], rows["tape-bert"]["layers"]) == ("XLNet", 12)
    assert {"antiberty", "sapiens-heavy", "sapiens-light", "iglm", "esm2-t6-8m", "prot-t5-xl-encoder"} <= set(rows)
    assert "non-commercial" in rows["iglm"]["licence"]
