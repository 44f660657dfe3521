"""Per-optimizee behaviour: P1's formula, MLP shapes, CNN construction and BatchNorm handling, datasets."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from optimizees import CNNClassifier, DatasetUnavailableError, MLPClassifier, QuadraticCos
from optimizees.classification import random_crop_flip
from optimizees.cnn import ARCHS, build_cnn
from optimizees.data import _load_mnist1d, load_dataset

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
