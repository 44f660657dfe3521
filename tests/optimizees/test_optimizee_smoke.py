"""Contract tests for every built-in optimizee at tiny size (offline; CIFAR is a synthetic stand-in).

Data-free problems (P1) and dataset problems (classifiers, the autoencoder) have different stream
contracts; classifiers (``is_classification``) also report an accuracy."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch

from harness.registry import OPTIMIZEES
from optimizees import Batch, CharLM, Optimizee

#: a CPU-test-sized character LM (48 training sequences of 8 symbols)
TINY_LM: dict[str, Any] = {
    "vocab": 6,
    "seq_len": 8,
    "num_train": 48,
    "num_test": 16,
    "hidden": 8,
    "batch_size": 16,
}
# (registered name, kwargs, needs the synthetic CIFAR fixture)
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("quadratic_cos", {}, False),
    ("mlp", {"dataset": "digits", "hidden": [16], "batch_size": 100}, False),
    ("mlp", {"dataset": "mnist1d", "hidden": [16, 8], "batch_size": 64, "max_train": 300}, False),
    ("cnn", {"arch": "resnet18", "dataset": "cifar10", "batch_size": 8, "bn_calibration_batches": 2}, True),
    (
        "cnn",
        {"arch": "resnet18", "dataset": "digits32", "batch_size": 8, "max_train": 40, "max_test": 16}
        | {"test_batch_size": 8, "bn_calibration_batches": 1},
        False,
    ),
    ("logreg", {"dataset": "digits", "batch_size": 100, "max_train": 300}, False),
    ("logreg", {"dataset": "mnist1d", "l2": 1e-3, "batch_size": 64, "max_train": 300}, False),
    ("char_lm", TINY_LM, False),
    ("char_lm", TINY_LM | {"arch": "transformer", "heads": 2}, False),
    ("autoencoder", {"dataset": "digits", "hidden": [16], "latent": 4, "batch_size": 100}, False),
]
IDS = [
    "quadratic_cos",
    "mlp-digits",
    "mlp-mnist1d",
    "cnn-resnet18-fakecifar",
    "cnn-resnet18-digits32",
    "logreg-digits",
    "logreg-l2-mnist1d",
    "char_lm-gru",
    "char_lm-transformer",
    "autoencoder-digits",
]
#: the validation share used by the val-split contract test
VAL_FRACTION = 0.25


@pytest.fixture(params=range(len(CASES)), ids=IDS)
def make(request: pytest.FixtureRequest) -> Any:
    """A factory ``make(seed) -> Optimizee`` for one case."""
    name, kwargs, fake = CASES[request.param]
    if fake:
        request.getfixturevalue("fake_cifar")

    def build(seed: int = 0, **extra: Any) -> Optimizee:
        return OPTIMIZEES.get(name)(seed=seed, device="cpu", **kwargs, **extra)

    return build


def _first(opt: Optimizee) -> Batch:
    return next(iter(opt.batches("train")))


def _has_data(opt: Optimizee) -> bool:
    """Whether ``opt`` trains on a dataset (its batches carry inputs), unlike a data-free problem (P1)."""
    return _first(opt).inputs is not None


def _input_dtype(opt: Optimizee) -> torch.dtype:
    """The dtype of model inputs: symbol ids for a language model, float32 features or images otherwise."""
    return torch.long if isinstance(opt, CharLM) else torch.float32


def _same_batch(a: Batch, b: Batch) -> bool:
    if a.inputs is None or b.inputs is None:
        return a.inputs is None and b.inputs is None
    return torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_every_builtin_is_covered() -> None:
    builtins = {"quadratic_cos", "mlp", "cnn", "logreg", "char_lm", "autoencoder"}
    assert builtins <= set(OPTIMIZEES.names())
    assert {c[0] for c in CASES} == builtins


def test_seed_determinism(make: Any) -> None:
    a, b, c = make(0), make(0), make(1)
    pa, pb, pc = a.init_params(), b.init_params(), c.init_params()
    assert list(pa) == list(pb) == list(pc)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)
    assert _same_batch(_first(a), _first(b))
    if _has_data(a):
        assert not _same_batch(_first(a), _first(c))
    # init_params are detached copies; the module returned by module() holds the same values
    assert all(not v.requires_grad for v in pa.values())
    mod = a.module()
    assert all(torch.equal(p, pa[k]) for k, p in mod.named_parameters())


def test_functional_loss_matches_module_and_has_gradients(make: Any) -> None:
    opt = make(0)
    batch = _first(opt)
    params = {k: v.requires_grad_() for k, v in opt.init_params().items()}
    loss = opt.loss(params, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    mod = opt.module()
    torch.testing.assert_close(loss.detach(), opt.module_loss(mod, batch).detach(), rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(loss, list(params.values()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_sgd_on_module_lowers_loss(make: Any) -> None:
    opt = make(0)
    batch = _first(opt)
    mod = opt.module()
    lr = 0.05 if _has_data(opt) else 0.002
    sgd = torch.optim.SGD(mod.parameters(), lr=lr)
    first = opt.module_loss(mod, batch).item()
    for _ in range(3):
        sgd.zero_grad()
        opt.module_loss(mod, batch).backward()
        sgd.step()
    assert opt.module_loss(mod, batch).item() < first


def test_evaluate_metrics(make: Any) -> None:
    opt = make(0)
    params = opt.init_params()
    metrics = opt.evaluate(params)
    assert math.isfinite(metrics["test_loss"])
    if opt.is_classification:
        assert 0.0 <= metrics["test_acc"] <= 1.0
        assert metrics["test_loss"] == pytest.approx(math.log(opt.num_classes), rel=0.5)
    else:
        assert set(metrics) == {"test_loss"}
    assert opt.evaluate(params) == metrics  # deterministic, no hidden state carried between calls


def test_steps_per_epoch_and_batch_streams(make: Any) -> None:
    opt = make(0)
    if not _has_data(opt):
        assert opt.steps_per_epoch == 1
        stream = opt.batches("train")
        assert all(next(stream).inputs is None for _ in range(3))
        assert len(list(opt.batches("test"))) == 1
        return
    spe = opt.steps_per_epoch
    assert spe == math.ceil(opt.num_train / opt.batch_size)
    stream = opt.batches("train")
    epoch1 = [next(stream) for _ in range(spe)]
    sizes = [len(b.targets) for b in epoch1]
    assert sum(sizes) == opt.num_train
    assert all(s == opt.batch_size for s in sizes[:-1])
    second_epoch_first = next(stream)
    assert not _same_batch(epoch1[0], second_epoch_first)  # reshuffled each epoch
    # every call replays the same stream
    assert _same_batch(_first(opt), epoch1[0])
    test1, test2 = list(opt.batches("test")), list(opt.batches("test"))
    assert sum(len(b.targets) for b in test1) == opt.num_test
    assert all(_same_batch(x, y) for x, y in zip(test1, test2, strict=True))
    assert epoch1[0].inputs.dtype == _input_dtype(opt)
    assert epoch1[0].targets.dtype == (torch.long if opt.is_classification else torch.float32)
    with pytest.raises(ValueError, match="split"):
        opt.batches("valid")


def test_unknown_kwarg_is_a_type_error(make: Any) -> None:
    cls = type(make(0))
    with pytest.raises(TypeError, match="bogus"):
        cls(seed=0, bogus=1)


def _rows(batches: list[Batch]) -> Counter[bytes]:
    """The multiset of (input, target) examples in ``batches``."""
    out: Counter[bytes] = Counter()
    for b in batches:
        assert b.inputs is not None and b.targets is not None
        for x, y in zip(b.inputs, b.targets, strict=True):
            out[x.numpy().tobytes() + y.numpy().tobytes()] += 1
    return out


def test_val_split(make: Any) -> None:
    plain = make(0)
    params = plain.init_params()
    with pytest.raises(ValueError, match="split"):
        plain.evaluate(params, split="train")
    if not _has_data(plain):
        # data-free: val is the objective itself, exactly as test
        val, test = list(plain.batches("val")), list(plain.batches("test"))
        assert len(val) == len(test) and all(_same_batch(a, b) for a, b in zip(val, test, strict=True))
        metrics = plain.evaluate(params, split="val")
        assert metrics == {"val_loss": plain.evaluate(params)["test_loss"]}
        return
    for call in (lambda: plain.batches("val"), lambda: plain.evaluate(params, split="val")):
        with pytest.raises(ValueError, match="val_fraction"):
            call()
    a, b = make(0, val_fraction=VAL_FRACTION), make(1, val_fraction=VAL_FRACTION)
    # a fixed share of the training examples moves out of training
    assert a.num_val == math.floor(plain.num_train * VAL_FRACTION) >= 1
    assert a.num_train == plain.num_train - a.num_val and a.num_test == plain.num_test
    assert a.steps_per_epoch == math.ceil(a.num_train / a.batch_size) <= plain.steps_per_epoch
    # the same examples for every seed, in a fixed order
    val_a, val_b = list(a.batches("val")), list(b.batches("val"))
    assert all(_same_batch(x, y) for x, y in zip(val_a, val_b, strict=True))
    assert all(_same_batch(x, y) for x, y in zip(val_a, a.batches("val"), strict=True))
    assert sum(len(v.targets) for v in val_a) == a.num_val
    # one training epoch plus the val pass is exactly the former training set: disjoint, nothing lost
    stream = a.batches("train")
    train_epoch = [next(stream) for _ in range(a.steps_per_epoch)]
    stream = plain.batches("train")
    full_epoch = [next(stream) for _ in range(plain.steps_per_epoch)]
    train_rows, val_rows = _rows(train_epoch), _rows(val_a)
    assert sum(train_rows.values()) == a.num_train
    assert train_rows + val_rows == _rows(full_epoch)
    # evaluate scores either split, with keys named after it
    metrics = a.evaluate(params, split="val")
    acc = {"acc"} if a.is_classification else set()
    assert set(metrics) == {f"val_{k}" for k in {"loss", *acc}}
    assert math.isfinite(metrics["val_loss"]) and 0.0 <= metrics.get("val_acc", 0.0) <= 1.0
    assert a.evaluate(params, split="val") == metrics
    assert set(a.evaluate(params)) == {f"test_{k}" for k in {"loss", *acc}}
