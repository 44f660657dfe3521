"""The transfer panel's optimizees: logistic regression (convex), the character LM on generated Markov text
(sequence models) and the MLP autoencoder (regression). Each is learnable with Adam in a few CPU steps."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from harness.registry import OPTIMIZEES
from optimizees import Autoencoder, CharLM, LogisticRegression, MLPClassifier, Optimizee
from optimizees.base import Batch
from optimizees.sequence import markov_chain, markov_corpus, sample_markov

TINY_LM = {"vocab": 6, "seq_len": 8, "num_train": 48, "num_test": 16, "hidden": 8, "batch_size": 16}

pytestmark = pytest.mark.usefixtures("one_thread")


def _adam(opt: Optimizee, lr: float, steps: int) -> dict[str, torch.Tensor]:
    """Train ``opt``'s module with Adam for ``steps`` steps; its trained parameters."""
    mod = opt.module()
    adam = torch.optim.Adam(mod.parameters(), lr=lr)
    stream = opt.batches("train")
    for _ in range(steps):
        adam.zero_grad()
        opt.module_loss(mod, next(stream)).backward()
        adam.step()
    return {k: v.detach() for k, v in mod.named_parameters()}


# -- logreg --------------------------------------------------------------------------------------


def test_logreg_is_mlp_without_hidden_layers() -> None:
    lr, mlp = LogisticRegression(seed=3), MLPClassifier(seed=3, hidden=[])
    p, q = lr.init_params(), mlp.init_params()
    assert [(k, tuple(v.shape)) for k, v in p.items()] == [("net.1.weight", (10, 64)), ("net.1.bias", (10,))]
    assert list(p) == list(q) and all(torch.equal(p[k], q[k]) for k in p)
    batch = next(lr.batches("train"))
    assert torch.equal(lr.loss(p, batch), mlp.loss(q, batch))
    assert lr.evaluate(p) == mlp.evaluate(q)
    assert lr.default_steps == 500 and OPTIMIZEES.get("logreg") is LogisticRegression


def test_logreg_l2_penalises_the_weights_only() -> None:
    plain, reg = LogisticRegression(seed=0), LogisticRegression(seed=0, l2=0.5)
    params = plain.init_params()
    batch = next(plain.batches("train"))
    penalty = 0.25 * params["net.1.weight"].square().sum()
    torch.testing.assert_close(reg.loss(params, batch), plain.loss(params, batch) + penalty)
    torch.testing.assert_close(reg.module_loss(reg.module(), batch), reg.loss(params, batch))
    assert reg.evaluate(params) == plain.evaluate(params)  # test_loss is the cross-entropy alone
    for bad in (-1.0, math.inf, True, "0.1"):
        with pytest.raises(ValueError, match="l2 must be a finite number >= 0"):
            LogisticRegression(l2=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="hidden"):
        LogisticRegression(hidden=[4])  # type: ignore[call-arg]


def test_logreg_learns_digits() -> None:
    opt = LogisticRegression(seed=0)
    before = opt.evaluate(opt.init_params())
    after = opt.evaluate(_adam(opt, 1e-2, 3 * opt.steps_per_epoch))
    assert before["test_loss"] > 2.0 and after["test_loss"] < 0.4 and after["test_acc"] > 0.9


# -- char_lm -------------------------------------------------------------------------------------


def test_markov_source_is_seeded_and_leaves_global_rngs_alone() -> None:
    np.random.seed(5)
    random.seed(5)
    torch.manual_seed(5)
    expected = (np.random.rand(), random.random(), torch.rand(1))
    np.random.seed(5)
    random.seed(5)
    torch.manual_seed(5)
    kw = {"vocab": 5, "order": 2, "alpha": 0.2, "seq_len": 12, "num_train": 30, "num_test": 10}
    a, bayes_a = markov_corpus(**kw, data_seed=0)
    assert (np.random.rand(), random.random(), torch.rand(1)) == expected
    b, bayes_b = markov_corpus(**kw, data_seed=0)
    c, _ = markov_corpus(**kw, data_seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test) and bayes_a == bayes_b
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == a.y_train.shape == (30, 12) and a.x_test.shape == (10, 12)
    assert a.x_train.dtype == torch.long and a.num_classes == 5
    # targets are the inputs shifted by one symbol
    assert torch.equal(a.x_train[:, 1:], a.y_train[:, :-1])
    assert 0 < bayes_a < math.log(5)
    # the optimizee seed changes the weights and the batch order, never the corpus
    s0, s1 = CharLM(seed=0, **TINY_LM), CharLM(seed=1, **TINY_LM)
    assert torch.equal(s0.data.x_train, s1.data.x_train) and s0.bayes_test_loss == s1.bayes_test_loss


def test_markov_samples_follow_the_chain() -> None:
    rng = np.random.default_rng(0)
    probs = markov_chain(3, 1, 0.5, rng)
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1)
    seq, nll = sample_markov(probs, 1, 4000, 6, rng)
    assert nll[:, 0].tolist() == [math.log(3)] * 4000  # the first symbol is uniform
    counts = np.zeros((3, 3))
    np.add.at(counts, (seq[:, :-1].ravel(), seq[:, 1:].ravel()), 1)
    assert np.abs(counts / counts.sum(1, keepdims=True) - probs).max() < 0.03
    np.testing.assert_allclose(nll[:, 1:], -np.log(probs[seq[:, :-1], seq[:, 1:]]))
    # order 2: the context is the two previous symbols, oldest first
    probs2 = markov_chain(2, 2, 1.0, rng)
    seq2, nll2 = sample_markov(probs2, 2, 50, 5, rng)
    np.testing.assert_allclose(nll2[:, 2:], -np.log(probs2[2 * seq2[:, :-2] + seq2[:, 1:-1], seq2[:, 2:]]))


@pytest.mark.parametrize("arch", ["gru", "lstm", "transformer"])
def test_char_lm_shapes_and_functional_loss(arch: str) -> None:
    opt = CharLM(seed=0, arch=arch, heads=2, **TINY_LM)
    batch = next(opt.batches("train"))
    assert batch.inputs is not None and batch.inputs.shape == (16, 8)
    params = opt.init_params()
    logits = opt.logits(params, batch)
    assert logits.shape == (16, 8, 6)
    mod = opt.module()
    torch.testing.assert_close(opt.loss(params, batch), opt.module_loss(mod, batch))
    # the functional loss runs on the given weights, not the template's (RNNs cache flat weight lists)
    g = torch.Generator().manual_seed(0)
    moved = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in params.items()}
    with torch.no_grad():
        for k, v in mod.named_parameters():
            v.copy_(moved[k])
    assert not torch.equal(opt.loss(moved, batch), opt.loss(params, batch))
    torch.testing.assert_close(opt.loss(moved, batch), opt.module_loss(mod, batch))
    metrics = opt.evaluate(params)
    assert set(metrics) == {"test_loss", "test_acc"}
    # the accuracy counts every position of every test sequence
    test = next(opt.batches("test"))
    assert test.targets is not None
    hits = (opt.logits(params, test).argmax(-1) == test.targets).sum()
    assert metrics["test_acc"] == pytest.approx(int(hits) / (16 * 8))


def test_transformer_is_causal() -> None:
    opt = CharLM(seed=0, arch="transformer", heads=2, **TINY_LM)
    params = opt.init_params()
    x = next(opt.batches("train")).inputs
    assert x is not None
    y = x.clone()
    y[:, 5] = (y[:, 5] + 1) % 6
    a, b = opt.logits(params, Batch(x)), opt.logits(params, Batch(y))
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_char_lm_bad_config() -> None:
    with pytest.raises(ValueError, match="unknown arch 'rnn'"):
        CharLM(arch="rnn")
    with pytest.raises(ValueError, match="heads"):
        CharLM(arch="transformer", hidden=10, heads=4)
    with pytest.raises(ValueError, match="vocab must be a whole number >= 2"):
        CharLM(vocab=1)
    with pytest.raises(ValueError, match="alpha"):
        CharLM(alpha=0.0)
    with pytest.raises(TypeError, match="dataset"):
        CharLM(dataset="digits")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"vocab": 64, "order": 4}, "make a chain of"),
        ({"num_train": 10**7, "seq_len": 100}, "symbols; at most"),
        ({"arch": "transformer", "hidden": 30, "heads": 4}, "must divide hidden"),
        ({"arch": "rnn"}, "'gru', 'lstm' or 'transformer'"),
        ({"hidden": 10**5}, "less than or equal to 8192"),
    ],
)
def test_char_lm_sizes_are_bounded_before_anything_is_built(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        OPTIMIZEES.check_kwargs("char_lm", kwargs, "char_lm")


def test_char_lm_learns_the_chain() -> None:
    opt = CharLM(seed=0, vocab=8, order=1, seq_len=16, num_train=256, num_test=64, hidden=32)
    before = opt.evaluate(opt.init_params())
    after = opt.evaluate(_adam(opt, 1e-2, 60))
    # from uniform guessing (ln 8 = 2.08) most of the way to the source's own loss
    assert before["test_loss"] > 2.0 > opt.bayes_test_loss + 0.5
    assert after["test_loss"] < opt.bayes_test_loss + 0.35 and after["test_acc"] > 0.4


def test_char_lm_val_holds_out_whole_sequences() -> None:
    opt = CharLM(seed=0, val_fraction=0.25, **TINY_LM)
    assert (opt.num_train, opt.num_val, opt.num_test) == (36, 12, 16)
    assert opt._val_idx is not None and opt._train_idx is not None
    held, kept = set(opt._val_idx.tolist()), set(opt._train_idx.tolist())
    assert not held & kept and held | kept == set(range(48))
    val = torch.cat([b.inputs for b in opt.batches("val") if b.inputs is not None])
    assert torch.equal(val, opt.data.x_train[opt._val_idx])  # whole sequences, in a fixed order
    assert torch.equal(opt._val_idx, CharLM(seed=1, val_fraction=0.25, **TINY_LM)._val_idx)


# -- autoencoder ---------------------------------------------------------------------------------


def test_autoencoder_architecture_and_targets() -> None:
    opt = Autoencoder(seed=0, hidden=[32], latent=8)
    shapes = [tuple(v.shape) for v in opt.init_params().values()]
    assert shapes == [(32, 64), (32,), (8, 32), (8,), (32, 8), (32,), (64, 32), (64,)]
    batch = next(opt.batches("train"))
    assert batch.inputs is not None and batch.targets is batch.inputs and batch.inputs.shape == (128, 64)
    assert opt.module()(batch.inputs).shape == (128, 64)
    assert not opt.is_classification and opt.steps_per_epoch == 12
    linear = Autoencoder(hidden=[], latent=3)
    assert [tuple(v.shape) for v in linear.init_params().values()] == [(3, 64), (3,), (64, 3), (64,)]
    for bad in ({"hidden": [0]}, {"latent": 0}, {"dataset": "nope"}):
        with pytest.raises(ValueError, match="hidden|latent|dataset"):
            Autoencoder(**bad)  # type: ignore[arg-type]


def test_autoencoder_images_keep_their_shape() -> None:
    opt = Autoencoder(dataset="digits16", hidden=[16], latent=4, max_train=8, batch_size=8)
    batch = next(opt.batches("train"))
    assert batch.inputs is not None and batch.inputs.shape == (8, 3, 16, 16)
    assert opt.module()(batch.inputs).shape == (8, 3, 16, 16)


def test_autoencoder_learns_digits() -> None:
    opt = Autoencoder(seed=0)
    before = opt.evaluate(opt.init_params())["test_loss"]
    after = opt.evaluate(_adam(opt, 1e-2, 10 * opt.steps_per_epoch))["test_loss"]
    assert before > 0.9 and after < 0.5 * before
