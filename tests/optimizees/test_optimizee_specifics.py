"""Per-optimizee behaviour: P1's formula, MLP shapes, CNN construction and BatchNorm handling, datasets."""

from __future__ import annotations

import math
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from optimizees import CNNClassifier, DatasetUnavailableError, MLPClassifier, QuadraticCos
from optimizees.base import Batch
from optimizees.classification import random_crop_flip, stratified_holdout
from optimizees.cnn import ARCHS, build_cnn
from optimizees.data import _digit_images, _load_mnist1d, load_dataset

# -- quadratic_cos -------------------------------------------------------------------------------


def test_quadratic_cos_formula_and_dim() -> None:
    opt = QuadraticCos(seed=3, dim=4)
    mod = opt.template
    assert mod.A.shape == (4, 4) and mod.b.shape == (4,) and mod.c.shape == (4,)
    x = torch.randn(4)
    expected = (mod.A @ x + mod.b).square().sum() + 0.5 * (mod.c * torch.cos(x)).sum()
    torch.testing.assert_close(opt.loss({"x": x}, None), expected)
    # problem data come from the seed too
    assert not torch.equal(QuadraticCos(seed=4, dim=4).template.A, mod.A)
    assert QuadraticCos().init_params()["x"].shape == (10,)
    with pytest.raises(ValueError, match="dim"):
        QuadraticCos(dim=0)


# -- mlp -----------------------------------------------------------------------------------------


def test_mlp_architecture_and_bad_config() -> None:
    opt = MLPClassifier(dataset="digits", hidden=[50, 20])
    shapes = [tuple(v.shape) for v in opt.init_params().values()]
    assert shapes == [(50, 64), (50,), (20, 50), (20,), (10, 20), (10,)]
    assert opt.steps_per_epoch == 12  # 1437 training digits, batch 128
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        MLPClassifier(dataset="nope")
    with pytest.raises(ValueError, match="hidden"):
        MLPClassifier(dataset="digits", hidden=[0])


def test_max_train_subset_is_seed_independent() -> None:
    a = MLPClassifier(seed=0, dataset="digits", max_train=100, max_test=50)
    b = MLPClassifier(seed=1, dataset="digits", max_train=100, max_test=50)
    assert a.num_train == 100 and a.num_test == 50 and a.steps_per_epoch == 1
    assert torch.equal(a._train_idx, b._train_idx)
    xa = torch.cat([bt.inputs for bt in a.batches("test")])
    xb = torch.cat([bt.inputs for bt in b.batches("test")])
    assert torch.equal(xa, xb)


def test_val_fraction_holds_out_a_fixed_stratified_subset() -> None:
    a = MLPClassifier(seed=0, dataset="digits", val_fraction=0.1)
    b = MLPClassifier(seed=5, dataset="digits", val_fraction=0.1)
    assert (a.num_train, a.num_val, a.steps_per_epoch) == (1294, 143, 11)  # 1437 digits, batch 128
    assert torch.equal(a._val_idx, b._val_idx) and torch.equal(a._train_idx, b._train_idx)
    assert not set(a._val_idx.tolist()) & set(a._train_idx.tolist())
    assert len(set(a._val_idx.tolist()) | set(a._train_idx.tolist())) == 1437
    # stratified: each class gives the floor or the ceiling of its share
    y = a.data.y_train
    counts, val_counts = torch.bincount(y, minlength=10), torch.bincount(y[a._val_idx], minlength=10)
    shares = zip(counts.tolist(), val_counts.tolist(), strict=True)
    assert all(math.floor(0.1 * c) <= v <= math.ceil(0.1 * c) for c, v in shares)
    # the test set is untouched, and so are test metrics
    plain = MLPClassifier(seed=0, dataset="digits")
    params = plain.init_params()
    assert a.evaluate(params) == plain.evaluate(params)
    # with max_train, the validation examples come from the kept subset
    c = MLPClassifier(seed=0, dataset="digits", max_train=100, val_fraction=0.2)
    kept = MLPClassifier(seed=0, dataset="digits", max_train=100)._train_idx
    assert (c.num_train, c.num_val) == (80, 20)
    assert set(c._val_idx.tolist()) | set(c._train_idx.tolist()) == set(kept.tolist())


def test_stratified_holdout_counts() -> None:
    y = torch.tensor([0] * 7 + [1] * 3 + [2] * 10)
    held, kept = stratified_holdout(y, 0.5)
    assert len(held) == 10 and len(kept) == 10
    assert torch.bincount(y[held], minlength=3).tolist() in (
        [3, 2, 5],
        [4, 1, 5],
    )  # floor or ceil of 3.5, 1.5, 5
    assert torch.equal(torch.sort(torch.cat([held, kept])).values, torch.arange(20))
    assert torch.equal(held, stratified_holdout(y, 0.5)[0])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), True, "0.1", None])
def test_bad_val_fraction(bad: object) -> None:
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\)"):
        MLPClassifier(dataset="digits", val_fraction=bad)  # type: ignore[arg-type]


def test_val_fraction_must_leave_an_example_each_side() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MLPClassifier(dataset="digits", max_train=5, val_fraction=0.1)  # 0.5 of an example
    opt = MLPClassifier(dataset="digits", max_train=5, val_fraction=0.2)
    assert (opt.num_train, opt.num_val) == (4, 1)


def test_val_split_needs_val_fraction() -> None:
    opt = MLPClassifier(dataset="digits")
    with pytest.raises(ValueError, match=r"set `val_fraction` \(e.g. 0.1\)"):
        opt.batches("val")
    with pytest.raises(ValueError, match="val_fraction"):
        opt.evaluate(opt.init_params(), split="val")
    with pytest.raises(ValueError, match="'test' or 'val'"):
        opt.evaluate(opt.init_params(), split="bogus")


def test_mlp_learns_digits() -> None:
    opt = MLPClassifier(seed=0, dataset="digits", hidden=[32])
    mod = opt.module()
    sgd = torch.optim.SGD(mod.parameters(), lr=0.1, momentum=0.9)
    stream = opt.batches("train")
    for _ in range(3 * opt.steps_per_epoch):
        sgd.zero_grad()
        opt.module_loss(mod, next(stream)).backward()
        sgd.step()
    assert opt.evaluate(dict(mod.named_parameters()))["test_acc"] > 0.85


# -- cnn -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_cnn_module_for_32x32(arch: str) -> None:
    torch.manual_seed(0)
    model = build_cnn(arch, num_classes=100)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    stem = model.conv1 if arch.startswith("resnet") else model.features[0][0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    if arch.startswith("resnet"):
        assert isinstance(model.maxpool, nn.Identity)


def test_cnn_arch_and_dataset_validation() -> None:
    assert set(ARCHS) == {"resnet18", "resnet50", "resnet152", "mobilenet_v2"}
    with pytest.raises(ValueError, match="arch"):
        build_cnn("vgg11", 10)
    with pytest.raises(ValueError, match="arch"):
        CNNClassifier(arch="vgg11")
    with pytest.raises(ValueError, match="dataset"):
        CNNClassifier(dataset="mnist")
    with pytest.raises(ValueError, match="augment"):
        CNNClassifier(dataset="digits", flip=False)


def _bn_buffers(mod: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in mod.named_buffers()}


def test_cnn_functional_loss_and_evaluate_leave_no_state(fake_cifar: object) -> None:
    opt = CNNClassifier(seed=0, arch="mobilenet_v2", batch_size=8, bn_calibration_batches=2)
    params = opt.init_params()
    before = _bn_buffers(opt.template)
    batch = next(iter(opt.batches("train")))
    opt.loss(params, batch)
    m1 = opt.evaluate(params)
    after = _bn_buffers(opt.template)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # evaluate re-estimates BatchNorm statistics, so it ignores how params were produced
    mod = opt.module()
    opt.module_loss(mod, batch)  # updates mod's own running stats
    assert opt.evaluate(dict(mod.named_parameters())) == m1


def test_cnn_augmentation_is_seeded(fake_cifar: object) -> None:
    kw = {"arch": "mobilenet_v2", "batch_size": 8, "augment": True}
    a = next(iter(CNNClassifier(seed=0, **kw).batches("train")))
    b = next(iter(CNNClassifier(seed=0, **kw).batches("train")))
    plain = next(iter(CNNClassifier(seed=0, arch="mobilenet_v2", batch_size=8).batches("train")))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, plain.targets)
    assert not torch.equal(a.inputs, plain.inputs)


def test_random_crop_flip() -> None:
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    again = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)
    same = random_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    assert all(torch.equal(s, o) or torch.equal(s, o.flip(-1)) for s, o in zip(same, x, strict=True))
    assert any(not torch.equal(s, o) for s, o in zip(same, x, strict=True))
    assert torch.equal(random_crop_flip(x, torch.Generator().manual_seed(0), pad=0, flip=False), x)


def test_digits_are_cropped_never_flipped() -> None:
    opt = CNNClassifier(seed=0, dataset="digits", augment=True, batch_size=16)
    assert opt.dataset_name == "digits32" and opt.flip is False
    assert CNNClassifier(dataset="digits32", augment=True, flip=True).flip is True
    plain = CNNClassifier(seed=0, dataset="digits", batch_size=16)
    a, b = next(iter(opt.batches("train"))), next(iter(plain.batches("train")))
    assert torch.equal(a.targets, b.targets) and not torch.equal(a.inputs, b.inputs)


def test_cifar_flips_by_default(fake_cifar: object) -> None:
    assert CNNClassifier(dataset="cifar10", augment=True).flip is True
    assert CNNClassifier(dataset="cifar10", augment=True, flip=False).flip is False


def test_resnet18_learns_digits32_with_sgd() -> None:
    opt = CNNClassifier(
        seed=0,
        arch="resnet18",
        dataset="digits",
        batch_size=32,
        max_train=128,
        max_test=64,
        bn_calibration_batches=2,
        val_fraction=0.25,
    )
    assert opt.num_train == 96 and opt.num_val == 32 and opt.steps_per_epoch == 3
    stream = opt.batches("train")
    epoch = [next(stream) for _ in range(opt.steps_per_epoch)]
    assert epoch[0].inputs.shape == (32, 3, 32, 32)
    whole = Batch(torch.cat([bt.inputs for bt in epoch]), torch.cat([bt.targets for bt in epoch]))
    mod = opt.module()
    with torch.no_grad():
        before = float(opt.module_loss(mod, whole))
    sgd = torch.optim.SGD(mod.parameters(), lr=0.01, momentum=0.9)
    stream = opt.batches("train")
    for _ in range(2 * opt.steps_per_epoch):
        sgd.zero_grad()
        loss = opt.module_loss(mod, next(stream))
        assert torch.isfinite(loss)
        loss.backward()
        sgd.step()
    with torch.no_grad():
        after = float(opt.module_loss(mod, whole))
    assert after < before - 0.1  # 2.41 -> 2.10 over the 96 training digits
    params = dict(mod.named_parameters())
    val, test = opt.evaluate(params, split="val"), opt.evaluate(params)
    assert set(val) == {"val_loss", "val_acc"} and set(test) == {"test_loss", "test_acc"}
    assert math.isfinite(val["val_loss"]) and math.isfinite(test["test_loss"])


# -- datasets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_missing_torchvision_dataset_is_a_clear_error(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(name, root=tmp_path, download=False)
    msg = str(info.value)
    assert name in msg and str(tmp_path) in msg and "download: true" in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(DatasetUnavailableError, match=name):
        CNNClassifier(dataset="cifar10", root=tmp_path) if name == "cifar10" else MLPClassifier(
            dataset=name, root=tmp_path
        )


def test_digits32_images_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("digits32 must not touch the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    data = load_dataset("digits32")
    flat = load_dataset("digits")
    assert data.name == "digits32" and data.num_classes == 10 and data.is_image
    assert data.x_train.shape == (1437, 3, 32, 32) and data.x_test.shape == (360, 3, 32, 32)
    assert data.x_train.dtype == torch.uint8 and data.input_shape == (3, 32, 32)
    assert torch.equal(data.x_train[:, 0], data.x_train[:, 2])  # the digit repeated on 3 channels
    # the same split as the flat digits, in the same order
    assert torch.equal(data.y_train, flat.y_train) and torch.equal(data.y_test, flat.y_test)
    x = data.prepare(data.x_train)
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    # bilinear resize: a blank digit stays blank, a full one saturates, values lie between
    img = _digit_images(np.stack([np.zeros(64), np.full(64, 16.0), np.arange(64) % 17]))
    assert int(img[0].max()) == 0 and int(img[1].min()) == 255 and img.shape == (3, 3, 32, 32)
    assert load_dataset("digits32") is load_dataset("digits32", root="/elsewhere")


def test_digits16_and_a_narrow_resnet18() -> None:
    small = load_dataset("digits16")
    assert small.x_train.shape == (1437, 3, 16, 16) and torch.equal(
        small.y_train, load_dataset("digits").y_train
    )
    opt = CNNClassifier(
        seed=0, dataset="digits16", width=16, batch_size=8, max_train=16, bn_calibration_batches=1
    )
    full = CNNClassifier(seed=0, dataset="digits16", batch_size=8, max_train=16, bn_calibration_batches=1)
    assert 0.6e6 < opt.num_params() < 0.8e6 and full.num_params() > 11e6  # same depth, a quarter of the width
    mod = opt.module()
    assert [m.out_channels for m in mod.modules() if isinstance(m, torch.nn.Conv2d)][:2] == [16, 16]
    batch = next(opt.batches("train"))
    assert opt.module_loss(mod, batch).shape == ()
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="width must be a positive whole number"):
            CNNClassifier(dataset="digits16", width=bad)
    with pytest.raises(ValueError, match="width applies to resnet18 only"):
        CNNClassifier(arch="resnet50", dataset="digits16", width=16)


def test_unknown_dataset_name() -> None:
    with pytest.raises(ValueError, match="known datasets"):
        load_dataset("imagenet")


def test_datasets_are_cached() -> None:
    assert load_dataset("digits") is load_dataset("digits", root="/elsewhere")
    d = load_dataset("digits")
    assert d.x_train.shape == (1437, 64) and d.x_test.shape == (360, 64)
    assert abs(float(d.x_train.mean())) < 1e-4


def test_mnist1d_is_generated_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("mnist1d must not touch the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    np.random.seed(7)
    random.seed(7)
    np_before, py_before = np.random.rand(), random.random()
    np.random.seed(7)
    random.seed(7)
    data = _load_mnist1d()
    assert (np.random.rand(), random.random()) == (np_before, py_before)  # global RNGs untouched
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.num_classes == 10 and set(data.y_train.tolist()) == set(range(10))
    assert torch.equal(data.x_train, load_dataset("mnist1d").x_train)  # generation is deterministic
