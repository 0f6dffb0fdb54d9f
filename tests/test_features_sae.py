"""The sparse autoencoder and its trainer: planted dictionaries recovered, exact resume, files, hand-checked
evaluation. All inputs are synthetic and small."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from safetensors import safe_open

from plmlens.features.sae import SAEConfig, SparseAutoencoder, load_sae, save_sae
from plmlens.features.train import (
    ArrayTokens,
    TokenSource,
    TrainingInterrupted,
    _token_stream,
    evaluate_sae,
    input_statistics,
    train_sae,
)
from plmlens.rundir import SAE_RECORD, SAE_WEIGHTS


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these small matrices gain nothing from more, and lose much on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def planted(n: int = 8000, d: int = 32, atoms: int = 64, per_token: int = 3, seed: int = 0):
    """Tokens ``x = Σ a_i d_i`` over `per_token` random atoms of a random unit dictionary, ``a_i ~ U(0.5, 1.5)``."""
    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(atoms, d))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    chosen = np.argsort(rng.random((n, atoms)), axis=1)[:, :per_token]
    coefficients = rng.uniform(0.5, 1.5, size=(n, per_token))
    return np.einsum("np,npd->nd", coefficients, dictionary[chosen]).astype(np.float32), dictionary


def best_cosines(sae: SparseAutoencoder, dictionary: np.ndarray) -> np.ndarray:
    """Per planted atom, the largest cosine with a decoder row."""
    rows = sae.W_dec.detach().cpu().numpy().astype(np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return (dictionary @ rows.T).max(axis=1)


def small_run(tmp_path, name: str, activation: str = "topk", **kwargs):
    """A short training run that crosses block and epoch boundaries and has dead latents (AuxK active)."""
    tokens = ArrayTokens(planted(n=700, d=16, atoms=24, seed=3)[0])
    config = SAEConfig(d_in=16, width=48, k=3, activation=activation, dead_tokens=256, aux_k=8)
    defaults = {"n_tokens_total": 50 * 64, "batch_size": 64, "block_tokens": 300, "seed": 5}
    return train_sae(tokens, config, checkpoint=tmp_path / name, **(defaults | kwargs))


def assert_same_tensors(a: SparseAutoencoder, b: SparseAutoencoder) -> None:
    for name, tensor in a.tensors().items():
        assert torch.equal(tensor, b.tensors()[name]), name


# -- training recovers a planted dictionary ---------------------------------------------------------------


def test_topk_recovers_a_planted_dictionary():
    torch.manual_seed(0)
    x, dictionary = planted()
    tokens = ArrayTokens(x)
    config = SAEConfig(d_in=32, width=128, k=4, dead_tokens=5000)
    msn = float((x.astype(np.float64) ** 2).sum(1).mean())
    untrained = SparseAutoencoder(dataclasses.replace(config, input_scale=1 / math.sqrt(msn))).eval()
    # The thresholds fail for a random dictionary: its best cosines are far below 0.9.
    assert (best_cosines(untrained, dictionary) > 0.9).mean() < 0.1
    assert evaluate_sae(untrained, tokens)["fraction_variance_explained"] < 0.5

    sae, record = train_sae(tokens, config, n_tokens_total=800 * 256, batch_size=256, block_tokens=4096)
    assert record.completed and record.steps == 800 and record.tokens_seen == 800 * 256
    assert (best_cosines(sae, dictionary) > 0.9).mean() >= 0.9
    evaluation = evaluate_sae(sae, tokens)
    assert evaluation["fraction_variance_explained"] > 0.9
    assert record.fraction_variance_explained > 0.9
    assert evaluation["mean_l0"] == pytest.approx(4.0)
    norms = sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_relu_trains_and_its_l1_penalty_lowers_l0():
    x, _ = planted(n=4000)
    tokens = ArrayTokens(x)
    l0 = {}
    for l1 in (0.0, 1.0):  # 1 here: the default 5 leaves this toy data (three atoms per token) mostly unexplained
        config = SAEConfig(d_in=32, width=64, activation="relu", l1_coeff=l1)
        sae, record = train_sae(tokens, config, n_tokens_total=300 * 256, batch_size=256)
        evaluation = evaluate_sae(sae, tokens)
        assert evaluation["fraction_variance_explained"] > 0.5
        assert record.l1 > 0
        l0[l1] = evaluation["mean_l0"]
    assert l0[1.0] < 0.5 * l0[0.0]


# -- resume ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path, activation):
    aux = []
    straight, record = small_run(tmp_path, "straight", activation, progress=lambda s: aux.append(s.aux_loss),
                                 progress_every=1)  # fmt: skip
    assert record.completed and record.steps == 50
    assert max(aux) > 0  # the AuxK loss was in play, so the dead counters matter
    first, partial = small_run(tmp_path, "resumed", activation, max_steps=17)
    assert not partial.completed and partial.steps == 17
    assert not torch.equal(first.W_dec, straight.W_dec)
    resumed, record2 = small_run(tmp_path, "resumed", activation, resume=True)
    assert record2.resumed_from_step == 17 and record2.steps == 50
    assert_same_tensors(straight, resumed)
    assert record2.mse == record.mse and record2.n_dead == record.n_dead
    if activation == "batchtopk":
        assert float(resumed.threshold) > 0
    # The checkpoints agree too: Adam moments and dead-latent counters.
    with (safe_open(str(tmp_path / "straight" / "checkpoint.safetensors"), "pt") as a,
          safe_open(str(tmp_path / "resumed" / "checkpoint.safetensors"), "pt") as b):  # fmt: skip
        assert sorted(a.keys()) == sorted(b.keys())
        assert {"adam.W_dec.exp_avg_sq", "adam.W_dec.step", "tokens_since_fired"} <= set(a.keys())
        for key in a.keys():  # noqa: SIM118 (safe_open is not a dict)
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key


def test_a_signal_saves_the_checkpoint_and_resume_finishes_the_same(tmp_path):
    straight, _ = small_run(tmp_path, "straight")

    def terminate_at_step_9(state):
        if state.step == 9:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 9"):
        small_run(tmp_path, "stopped", progress=terminate_at_step_9, progress_every=1)
    assert json.loads((tmp_path / "stopped" / "checkpoint.json").read_text())["step"] == 9
    resumed, _ = small_run(tmp_path, "stopped", resume=True)
    assert_same_tensors(straight, resumed)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was put back


@pytest.mark.parametrize(("change", "named"), [
    ({"seed": 6}, "seed"), ({"batch_size": 32}, "batch_size"), ({"activation": "batchtopk"}, "config.activation"),
])  # fmt: skip
def test_resume_refuses_a_checkpoint_made_otherwise(tmp_path, change, named):
    small_run(tmp_path, "run", max_steps=3)
    with pytest.raises(
        ValueError, match=rf"checkpoint\.json: made with different settings \((.*, )?{named}(, .*)?\); cannot resume$"
    ) as error:
        small_run(tmp_path, "run", resume=True, **change)
    assert "\n" not in str(error.value)


def test_resume_refuses_a_torn_checkpoint(tmp_path):
    small_run(tmp_path, "run", max_steps=3)
    record = tmp_path / "run" / "checkpoint.json"
    record.write_text(record.read_text().replace('"step": 3', '"step": 2'))
    with pytest.raises(ValueError, match=r"checkpoint\.safetensors: holds step 3, checkpoint\.json says 2"):
        small_run(tmp_path, "run", resume=True)


def test_training_reads_one_block_at_a_time():
    x, _ = planted(n=3000, d=8, atoms=16)

    class Spy(ArrayTokens):
        largest = 0

        def read(self, start, stop):
            Spy.largest = max(Spy.largest, stop - start)
            return super().read(start, stop)

    spy = Spy(x)
    assert isinstance(spy, TokenSource)
    train_sae(spy, SAEConfig(d_in=8, width=16, k=2), n_tokens_total=6000, batch_size=100, block_tokens=512)
    assert Spy.largest == 1024  # the statistics' chunks; the training blocks are 512; never all 3,000


def test_the_token_order_is_a_permutation_per_epoch_and_resumable():
    ids = np.arange(1000, dtype=np.float32)[:, None]
    tokens = ArrayTokens(ids)

    def take(position, count):
        out, stream = [], _token_stream(tokens, 7, 128, position)
        while sum(map(len, out)) < count:
            out.append(next(stream))
        return np.concatenate(out)[:count, 0]

    two_epochs = take(0, 2000)
    assert sorted(two_epochs[:1000]) == list(range(1000)) and sorted(two_epochs[1000:]) == list(range(1000))
    assert not np.array_equal(two_epochs[:1000], two_epochs[1000:])  # each epoch shuffled afresh
    assert not np.array_equal(two_epochs[:1000], np.arange(1000))
    assert np.array_equal(take(777, 1000), two_epochs[777:1777])
    other_seed = next(_token_stream(tokens, 8, 128, 0))[:, 0]
    assert not np.array_equal(other_seed, two_epochs[: len(other_seed)])


def test_bad_tokens_are_refused_with_one_line():
    x = np.ones((50, 4), dtype=np.float32)
    x[20, 1] = np.nan
    with pytest.raises(ValueError, match=r"tokens 0:50 hold NaN"):
        train_sae(ArrayTokens(x), SAEConfig(d_in=4, width=8, k=2), batch_size=10)
    with pytest.raises(ValueError, match="d=4, SAE config d_in=5"):
        train_sae(ArrayTokens(x), SAEConfig(d_in=5, width=8, k=2))


# -- normalisation -----------------------------------------------------------------------------------------


def test_input_scale_makes_the_mean_squared_norm_one():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    msn, mean = input_statistics(ArrayTokens(x))
    assert msn == pytest.approx((25 + 0 + 1 + 4) / 4)  # 7.5
    assert mean == pytest.approx([1.0, 1.5])
    sae, _ = train_sae(ArrayTokens(x), SAEConfig(d_in=2, width=4, k=1), batch_size=4, n_tokens_total=4)
    scale = sae.config.input_scale
    assert scale == pytest.approx(1 / math.sqrt(7.5))
    assert float(((x * scale) ** 2).sum(1).mean()) == pytest.approx(1.0)
    # encode works on raw units: the scale is applied inside.
    raw = torch.from_numpy(x)
    expected = sae.activate((raw * scale - sae.b_dec) @ sae.W_enc + sae.b_enc)
    assert torch.allclose(sae.encode(raw), expected)
    assert torch.allclose(sae.decode(expected), (expected @ sae.W_dec + sae.b_dec) / scale)


def test_input_statistics_samples_large_sources():
    rng = np.random.default_rng(0)
    x = np.zeros((10_000, 3), dtype=np.float32)
    x[np.arange(10_000), rng.integers(0, 3, 10_000)] = rng.choice([-2.0, 2.0], 10_000)  # every norm² is 4
    msn, _ = input_statistics(ArrayTokens(x), max_tokens=1000, chunk=100)
    assert msn == 4.0


# -- the module --------------------------------------------------------------------------------------------


def test_topk_keeps_exactly_k_latents_per_token():
    sae = SparseAutoencoder(SAEConfig(d_in=16, width=64, k=5))
    latents = sae.encode(torch.randn(200, 16, generator=torch.Generator().manual_seed(1)))
    assert ((latents > 0).sum(1) == 5).all()
    assert (latents >= 0).all()


def test_batchtopk_keeps_k_per_token_over_the_batch_and_a_threshold_at_inference():
    sae = SparseAutoencoder(SAEConfig(d_in=16, width=64, k=4, activation="batchtopk", threshold_momentum=0.5))
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="no inference threshold"):
        sae.eval().encode(x)
    sae.train()
    pre = sae.pre_activations(x)
    latents = sae.encode(x)
    assert int((latents > 0).sum()) == 4 * 50
    assert not ((latents > 0).sum(1) == 4).all()  # per token, the count varies
    smallest = float(latents[latents > 0].min().detach())
    assert float(sae.threshold) == pytest.approx(smallest)  # the first batch sets it
    sae.encode(x)
    assert float(sae.threshold) == pytest.approx(smallest)  # the same batch again: unchanged under momentum
    sae.threshold.fill_(0.3)
    sae.eval()
    assert torch.equal(sae.encode(x), pre * (pre > 0.3))


def test_decoder_rows_stay_unit_and_gradients_lose_their_parallel_part():
    sae = SparseAutoencoder(SAEConfig(d_in=8, width=16, k=2))
    assert torch.equal(sae.W_enc, sae.W_dec.T)  # tied at init
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16))
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.normalize_decoder_()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16))
    sae.W_dec.grad = torch.randn(16, 8)
    sae.remove_parallel_grad_()
    assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(1), torch.zeros(16), atol=1e-6)


def test_config_round_trips_and_refuses_bad_records():
    config = SAEConfig(d_in=10, width=40, k=3, activation="batchtopk")
    assert config.aux_k == 5
    assert SAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for record, message in [
        ({"d_in": 10, "width": 40, "activation": "gelu"}, "activation must be one of"),
        ({"d_in": 10, "width": "40"}, "width must be a positive integer"),
        ({"d_in": 10, "width": 40, "colour": 1}, r"unknown fields \['colour'\]"),
        ({"d_in": 10}, r"lacks \['width'\]"),
        ({"d_in": 10, "width": 4, "k": 8}, r"k \(8\) exceeds width"),
        ([1, 2], "not a record"),
    ]:
        with pytest.raises(ValueError, match=rf"^x/sae\.json: .*{message}"):
            SAEConfig.from_dict(record, "x/sae.json")


# -- files -------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    sae = SparseAutoencoder(SAEConfig(d_in=8, width=16, k=3, activation="batchtopk", input_scale=0.5, seed=4))
    sae.encode(torch.randn(10, 8))  # sets the threshold
    save_sae(sae, tmp_path / "sae", {"model": "toy", "layer": 3})
    loaded, metadata = load_sae(tmp_path / "sae")
    assert metadata == {"model": "toy", "layer": 3}
    assert loaded.config == sae.config and not loaded.training
    x = torch.randn(20, 8)
    sae.eval()
    assert torch.equal(sae(x)[0], loaded(x)[0]) and torch.equal(sae(x)[1], loaded(x)[1])
    with safe_open(str(tmp_path / "sae" / SAE_WEIGHTS), framework="pt") as handle:  # a safetensors file, no pickle
        assert sorted(handle.keys()) == ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"]
    assert json.loads((tmp_path / "sae" / SAE_RECORD).read_text())["format"] == "plmlens-sae/1"
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == [SAE_RECORD, SAE_WEIGHTS]  # no temporaries


def test_load_names_the_damaged_or_missing_file(tmp_path):
    directory = save_sae(SparseAutoencoder(SAEConfig(d_in=4, width=8, k=2)), tmp_path / "sae")
    record, weights = directory / SAE_RECORD, directory / SAE_WEIGHTS
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=rf"^{weights}: damaged safetensors"):
        load_sae(directory)
    weights.unlink()
    with pytest.raises(ValueError, match=rf"^{weights}: missing$"):
        load_sae(directory)
    weights.write_bytes(good)
    text = record.read_text()
    record.write_text(text.replace('"width": 8', '"width": 9'))
    with pytest.raises(ValueError, match=rf"^{weights}: tensor 'W_enc' has shape \(4, 8\), the config says \(4, 9\)"):
        load_sae(directory)
    record.write_text(text[:-20])
    with pytest.raises(ValueError, match=rf"^{record}: damaged \(JSONDecodeError") as error:
        load_sae(directory)
    assert "\n" not in str(error.value)
    record.write_text(text.replace("plmlens-sae/1", "other/2"))
    with pytest.raises(ValueError, match=rf"^{record}: format 'other/2'"):
        load_sae(directory)


# -- evaluation --------------------------------------------------------------------------------------------


def test_evaluate_sae_by_hand():
    # Two latents, the identity both ways, ReLU: latent 0 reads +x₀, latent 1 reads +x₁.
    sae = SparseAutoencoder(SAEConfig(d_in=2, width=2, activation="relu"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(torch.eye(2))
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, -1.0], [0.0, 0.0]], dtype=np.float32)
    # x̂ = relu(x): only token 2 is off, by 1. Mean (0.75, -0.25); Σ‖x − x̄‖² = 0.125 + 1.625 + 1.125 + 0.625.
    result = evaluate_sae(sae, ArrayTokens(x), batch_size=3)
    assert result["n_tokens"] == 4
    assert result["fraction_variance_explained"] == pytest.approx(1 - 1 / 3.5)
    assert result["mse"] == pytest.approx(0.25)
    assert result["mean_l0"] == 0.5
    assert result["frequency"] == pytest.approx([0.5, 0.0])
    assert result["n_dead"] == 1 and result["n_dense"] == 1
    assert evaluate_sae(sae, ArrayTokens(x), dense_threshold=0.5)["n_dense"] == 0  # dense means more than
    # Far from the origin the merged variance is still exact (the same tokens shifted along latent 0's axis
    # keep their variance; x̂ changes only where relu cut).
    shifted = evaluate_sae(sae, ArrayTokens(x + np.float32([1000.0, 0.0])), batch_size=3)
    assert shifted["fraction_variance_explained"] == pytest.approx(1 - 1 / 3.5)
