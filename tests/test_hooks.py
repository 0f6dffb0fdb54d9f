"""The named hook points (plmlens.models.hooks) on tiny random models of every architecture: each name resolves,
hooks see what the adapter streams and what head ablation edits, and the family table is the one place the
architectures are written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import transformers

from models_fixtures import PROTBERT_VOCAB, word_level_tokenizer
from plmlens.causal import AblationUnsupportedError, HeadAblation, head_projections, record_head_outputs
from plmlens.models import load_model
from plmlens.models.errors import HookUnavailableError
from plmlens.models.families import FAMILIES
from plmlens.models.hooks import HOOK_KINDS, attach_hooks, hook_name, hook_names, hook_point, parse_hook_name
from test_models import KINDS, _build

SEQUENCES = ["MKTAYIAKQRQISFVKSHF", "ACDEFGHIK", "WYVTSRQPNMLKIHG"]
SRC = Path(__file__).resolve().parents[1] / "src" / "plmlens"


@pytest.fixture(scope="module", params=KINDS)
def adapter(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    model, tokenizer, _, _ = _build(request.param, directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return load_model(directory, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def unlisted(tmp_path_factory):
    """A tiny ELECTRA: not in the family table, so its spec comes from transformers' records."""
    directory = tmp_path_factory.mktemp("electra")
    torch.manual_seed(0)
    config = transformers.ElectraConfig(
        vocab_size=30, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=40, max_position_embeddings=64,
    )  # fmt: skip
    transformers.ElectraModel(config).save_pretrained(directory)
    tokenizer = word_level_tokenizer(
        PROTBERT_VOCAB, "[CLS] $A [SEP]", ["[CLS]", "[SEP]"],
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    tokenizer.save_pretrained(directory)
    return load_model(directory, device="cpu", dtype="float32")


def _no_hooks_left(adapter) -> bool:
    owner = adapter.lm_model if adapter.lm_model is not None else adapter.model
    tables = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")
    return all(not getattr(m, table) for m in owner.modules() for table in tables)


def test_every_name_resolves_to_a_module_of_the_model(adapter):
    names = hook_names(adapter)
    assert names == adapter.hook_names()
    assert names[0] == "embed" and "lm_head" not in names  # loaded without its head
    has_heads = adapter.architecture != "XLNet"
    per_layer = 3 if has_heads else 2
    assert len(names) == 1 + per_layer * adapter.n_layers
    modules = {id(m) for m in adapter.model.modules()}
    for name in names:
        point = adapter.hook_point(name)
        assert point.name == name and id(point.module) in modules
        assert point.kind == HOOK_KINDS[point.point]
        assert hook_name(*parse_hook_name(name)) == name
    last = adapter.n_layers - 1
    assert hook_point(adapter, f"blocks.{last}.attn.pattern").module is adapter.attention_modules[-1]
    assert hook_point(adapter, f"blocks.{last}.resid_post").module is adapter.blocks[-1]
    if has_heads:
        assert [hook_point(adapter, f"blocks.{k}.attn.head_out").module for k in range(adapter.n_layers)] == (
            head_projections(adapter)
        )
    else:
        with pytest.raises(HookUnavailableError, match="mix heads inside the attention"):
            hook_point(adapter, "blocks.0.attn.head_out")


def test_hooks_see_what_the_adapter_streams(adapter):
    seen: dict[str, torch.Tensor] = {}

    def keep(value, point):
        seen[point.name] = value.detach().clone()

    names = ["embed"] + [hook_name(p, k) for k in range(adapter.n_layers) for p in ("attn.pattern", "resid_post")]
    encoding = adapter.encode(SEQUENCES)
    # Registered first, so these hooks see the probabilities before the streaming hands them over.
    with attach_hooks(adapter, {name: keep for name in names}) as points:
        assert [p.name for p in points] == names
        layers = list(adapter.iter_layers(SEQUENCES, hidden_states=True))
    assert _no_hooks_left(adapter)
    for b, (start, n) in enumerate(zip(encoding.starts.tolist(), encoding.lengths.tolist(), strict=True)):
        residues = slice(start, start + n)
        embedding = seen["embed"][b, residues]
        assert torch.equal(layers[0].embedding[b, :n], embedding)
        for k, out in enumerate(layers):
            pattern = seen[f"blocks.{k}.attn.pattern"][b, :, residues, residues]
            assert pattern.shape == (adapter.n_heads, n, n)
            assert torch.equal(out.attention[b, :, :n, :n], pattern)
            assert torch.equal(out.hidden[b, :n], seen[f"blocks.{k}.resid_post"][b, residues])


def test_head_out_is_the_projection_input_split_per_head(adapter):
    spec = adapter.hooks
    if spec.head_projection is None:  # XLNet mixes heads inside its attention: no head_out, said plainly
        with pytest.raises(HookUnavailableError, match="mix"):
            adapter.hook_point("blocks.0.attn.head_out")
        return
    # By hand: a forward pre-hook on each layer's projection, counting calls of ALBERT's shared one.
    manual: list[torch.Tensor] = []
    unique = {id(m): m for m in (block.get_submodule(spec.head_projection) for block in adapter.blocks)}
    handles = [m.register_forward_pre_hook(lambda m, args: manual.append(args[0].clone())) for m in unique.values()]
    try:
        with record_head_outputs(adapter) as recorded:
            adapter.attention(SEQUENCES[0])
    finally:
        for handle in handles:
            handle.remove()
    assert len(recorded) == len(manual) == adapter.n_layers
    for heads, merged in zip(recorded, manual, strict=True):
        assert heads.shape[-2:] == (adapter.n_heads, merged.shape[-1] // adapter.n_heads)
        assert torch.equal(heads.reshape(merged.shape), merged)
    assert _no_hooks_left(adapter)


def test_a_returned_tensor_replaces_the_value(adapter):
    layer = adapter.n_layers - 1

    def double(value, point):
        return value * 2

    intact = adapter.embed(SEQUENCES[:1], layer=layer)[0]
    with attach_hooks(adapter, [(f"blocks.{layer}.resid_post", double)]):
        doubled = adapter.embed(SEQUENCES[:1], layer=layer)[0]
    torch.testing.assert_close(torch.as_tensor(doubled), 2 * torch.as_tensor(intact), rtol=0, atol=0)
    assert (adapter.embed(SEQUENCES[:1], layer=layer)[0] == intact).all()


def test_shared_layers_are_counted_per_forward_pass(tmp_path):
    """ALBERT runs one layer module for every layer: an iteration stopped after its first layer must not shift
    which call the next pass's hooks take for which layer."""
    model, tokenizer, _, _ = _build("albert", tmp_path)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    adapter = load_model(tmp_path, device="cpu", dtype="float32")
    last = adapter.n_layers - 1
    assert len({id(hook_point(adapter, f"blocks.{k}.attn.head_out").module) for k in range(adapter.n_layers)}) == 1
    with HeadAblation(adapter, [(last, 1)]):
        for _ in adapter.iter_layers(SEQUENCES):
            break
        with record_head_outputs(adapter) as after:
            adapter.attention(SEQUENCES[0])
    assert [bool(torch.count_nonzero(layer[..., 1, :]) == 0) for layer in after] == [False] * last + [True]


@pytest.mark.parametrize(
    "name",
    ["blocks.0.attn", "blocks.-1.resid_post", "block.0.resid_post", "blocks.0.attn.scores", "hook_embed", ""],
)
def test_unknown_names_are_one_line_errors(name):
    with pytest.raises(ValueError, match=re.escape(f"unknown hook name {name!r}")) as raised:
        parse_hook_name(name)
    assert "\n" not in str(raised.value) and "blocks.{layer}.attn.pattern" in str(raised.value)


def test_layers_the_model_lacks_are_refused_before_anything_is_hooked(unlisted):
    hooks = [("blocks.0.resid_post", print), ("blocks.2.resid_post", print)]
    with (
        pytest.raises(ValueError, match=r"hook 'blocks\.2\.resid_post' names layer 2, but it has layers 0 to 1"),
        attach_hooks(unlisted, hooks),
    ):
        pass
    assert _no_hooks_left(unlisted)
    with pytest.raises(HookUnavailableError, match="loaded without its language-model head"):
        hook_point(unlisted, "lm_head")


def test_hooks_are_removed_when_the_block_raises(unlisted):
    with pytest.raises(KeyError), attach_hooks(unlisted, {"blocks.1.attn.pattern": lambda value, point: None}):
        assert not _no_hooks_left(unlisted)
        raise KeyError("x")
    assert _no_hooks_left(unlisted)


def test_an_unlisted_family_streams_but_refuses_head_ablation(unlisted):
    assert unlisted.hooks.head_projection is None and not unlisted.hooks.heads_mixed
    assert unlisted.attention(SEQUENCES[1]).shape == (2, 4, 9, 9)
    assert not any(".head_out" in name for name in unlisted.hook_names())
    message = "its electra family has no known head projection"
    with pytest.raises(AblationUnsupportedError, match=message) as raised:
        HeadAblation(unlisted, [(0, 0)])
    assert str(raised.value).startswith(f"{unlisted.name}: ") and "\n" not in str(raised.value)
    with pytest.raises(AblationUnsupportedError, match=message), record_head_outputs(unlisted):
        pass
    with pytest.raises(AblationUnsupportedError, match=message):
        head_projections(unlisted)
    with pytest.raises(HookUnavailableError, match=message):
        hook_point(unlisted, "blocks.0.attn.head_out")
    assert _no_hooks_left(unlisted)


_LM_CLASSES = {
    "protbert": "BertForMaskedLM",
    "albert": "AlbertForMaskedLM",
    "esm": "EsmForMaskedLM",
    "sapiens": "RobertaForMaskedLM",
    "iglm": "GPT2LMHeadModel",
}


@pytest.mark.parametrize("kind", sorted(_LM_CLASSES))
def test_lm_head_gives_the_logits(kind, tmp_path):
    base, tokenizer, _, _ = _build(kind, tmp_path)
    torch.manual_seed(1)
    getattr(transformers, _LM_CLASSES[kind])(base.config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    adapter = load_model(tmp_path, device="cpu", dtype="float32", lm_head=True)
    assert adapter.hook_names()[-1] == "lm_head"
    encoding = adapter.encode(SEQUENCES)
    seen = []
    with torch.no_grad(), attach_hooks(adapter, {"lm_head": lambda value, point: seen.append(value.clone())}):
        logits = adapter.lm_model(**encoding.model_inputs(adapter.device)).logits
    assert len(seen) == 1 and torch.equal(seen[0], logits)
    with torch.no_grad(), attach_hooks(adapter, {"lm_head": lambda value, point: torch.zeros_like(value)}):
        assert not adapter.lm_model(**encoding.model_inputs(adapter.device)).logits.any()
    assert _no_hooks_left(adapter)


def test_the_family_table_is_the_only_description_of_each_architecture():
    """HookSpec literals, and the module classes they name, are written in models/families.py only (the head
    projection paths are not checked: the fairseq renaming in antibody.py writes ``attention.output.dense`` as
    a parameter name)."""
    families = SRC / "models" / "families.py"
    spelled = {
        value for family in FAMILIES.values() for value in (family.hooks.block_class, family.hooks.attention_class)
    }
    for path in SRC.rglob("*.py"):
        if path == families:
            continue
        text = path.read_text()
        assert "HookSpec(" not in text, path
        quoted = [value for value in spelled if f'"{value}"' in text or f"'{value}'" in text]
        assert not quoted, (path, quoted)
    assert families.read_text().count("HookSpec(") == len(FAMILIES) + 1  # one per family, one for unlisted types
