"""Meta-training: learning happens, CL and IL behave as specified, resume is exact."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from harness.registry import TEACHERS
from optimizees.base import Batch, Optimizee
from teachers.checkpoint import load_teacher
from teachers.meta_train import (
    Curriculum,
    MetaTrainConfig,
    MetaTrainer,
    OptimizeeFactory,
    evaluate_teacher,
    meta_train,
    optimizee_factory,
    run_teacher,
)

P1 = "quadratic_cos"
VAL = (1_000_000, 1_000_001, 1_000_002, 1_000_003)


def _recording_factory(base: OptimizeeFactory, seen_x: list[torch.Tensor]) -> OptimizeeFactory:
    """``base`` whose optimizees record (detached) the P1 point ``x`` every loss is evaluated at."""

    def make(seed: int) -> Optimizee:
        opt = base(seed)
        inner = opt.loss

        def loss(params: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
            seen_x.append(params["x"].detach().clone())
            return inner(params, batch)

        opt.loss = loss  # type: ignore[method-assign]
        return opt

    return make


def _record_teacher_calls(trainer: MetaTrainer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(features, update)`` of every teacher call from now on."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(_mod: torch.nn.Module, args: tuple[torch.Tensor, ...], out: tuple[torch.Tensor, dict]) -> None:
        calls.append((args[0].detach().clone(), out[0].detach().clone()))

    trainer.teacher.register_forward_hook(hook)
    return calls


def _p1_grad(opt: Optimizee, x: torch.Tensor) -> torch.Tensor:
    leaf = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(opt.loss({"x": leaf}, Batch()), [leaf])
    return g


def test_meta_training_rp_improves_on_p1() -> None:
    cfg = MetaTrainConfig(
        teacher="rp", optimizee=P1, episode_length=60, episodes=25, eval_every=25, val_seeds=VAL, seed=0
    )
    trainer = MetaTrainer(cfg)
    before = trainer.validate()
    seen: list[int] = []
    result = trainer.run(lambda i, m: seen.append(i))
    assert seen == list(range(1, 26))
    assert result.episodes == 25 and result.meta_iterations == 25 * 3
    assert result.stop_reason == "episodes"
    assert all(math.isfinite(h["meta_loss"]) for h in result.history)
    assert result.best_val_loss < 0.6 * before
    # the kept best reproduces its validation loss
    fac = optimizee_factory(P1)
    assert evaluate_teacher(result.teacher(), fac, VAL, 60) == pytest.approx(result.best_val_loss, rel=1e-5)
    first = sum(h["meta_loss"] for h in result.history[:5]) / 5
    last = sum(h["meta_loss"] for h in result.history[-5:]) / 5
    assert last < first


def test_curriculum_unit() -> None:
    cl = Curriculum((10, 20, 30), patience=3)
    events = [cl.report(v) for v in (5.0, 4.0, 4.5, 4.0, 4.2)]
    assert events == ["improved", "improved", "wait", "wait", "advance"]
    assert cl.length == 20
    events = [cl.report(v) for v in (9.0, 9.5, 9.9, 9.9)]
    assert events == ["improved", "wait", "wait", "advance"]
    assert cl.length == 30
    events = [cl.report(v) for v in (1.0, 2.0, 2.0, 2.0, 0.5)]
    assert events == ["improved", "wait", "wait", "done", "done"]
    assert cl.done
    cl2 = Curriculum((10, 20, 30), patience=3)
    cl2.load_state_dict(cl.state_dict())
    assert cl2.length == 30 and cl2.done


def test_curriculum_advances_after_three_bad_evals_and_keeps_best(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = MetaTrainConfig(
        teacher="rp_small",
        optimizee=P1,
        curriculum=True,
        cl_lengths=(4, 8),
        cl_patience=3,
        unroll=4,
        eval_every=1,
        episodes=None,
        val_seeds=VAL,
    )
    trainer = MetaTrainer(cfg)
    scripted = iter([5.0, 3.0, 4.0, 3.5, 3.1, 10.0, 11.0, 12.0, 12.0])
    snapshots: list[dict[str, torch.Tensor]] = []

    def fake_validate() -> float:
        snapshots.append({k: v.clone() for k, v in trainer.teacher.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(trainer, "validate", fake_validate)
    lengths: list[int] = []
    result = trainer.run(lambda i, m: lengths.append(m["episode_length"]))
    # episodes 1-5 at length 4; 3 evals without improvement after the best (episode 2) -> advance
    assert lengths[:5] == [4] * 5
    assert result.history[4]["cl_event"] == "advance"
    assert lengths[5:] == [8] * 4
    assert result.stop_reason == "curriculum_done"
    assert result.history[-1]["cl_event"] == "done"
    # after advancing the teacher restarted from the best weights (validated at episode 2)
    # snapshots[k] holds the weights validated after episode k+1; episode 6 starts from episode 2's
    best_weights = snapshots[1]
    stage2_start_changed = any(not torch.equal(best_weights[k], snapshots[5][k]) for k in best_weights)
    assert stage2_start_changed  # it trained on from there
    # the result keeps the best of the final stage (10.0 at episode 6)
    assert result.best_val_loss == 10.0 and result.best_episode == 6
    for k, v in result.best_state_dict.items():
        assert torch.equal(v, snapshots[5][k])
    # and the live teacher was reset to that best when the curriculum ended
    for k, v in trainer.teacher.state_dict().items():
        assert torch.equal(v, snapshots[5][k])


def test_curriculum_restart_uses_best_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = MetaTrainConfig(
        teacher="rp_small",
        optimizee=P1,
        curriculum=True,
        cl_lengths=(4, 8),
        unroll=4,
        eval_every=1,
        episodes=5,
        val_seeds=VAL,
    )
    trainer = MetaTrainer(cfg)
    scripted = iter([5.0, 3.0, 4.0, 3.5, 3.1])
    snaps: list[dict[str, torch.Tensor]] = []

    def fake_validate() -> float:
        snaps.append({k: v.clone() for k, v in trainer.teacher.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(trainer, "validate", fake_validate)
    trainer.run()
    assert trainer.curriculum is not None and trainer.curriculum.length == 8
    for k, v in trainer.teacher.state_dict().items():
        assert torch.equal(v, snaps[1][k])


def _scaled_episode(random_scaling: bool, scale: float = 0.5) -> list[torch.Tensor]:
    """Run two DM episodes on a 100-d P1 and infer, per episode, the per-coordinate factor ``c`` with
    which the teacher sees the problem: ``x = c * y`` where the loss is evaluated at ``x`` and the
    teacher steps ``y``. Checks the two consequences: the teacher's gradient is ``c * grad f(x)`` and
    each step moves ``x`` by ``c * update``; the loss sees the optimizee's own ``x_0``. Returns ``c`` per
    episode."""
    base = optimizee_factory(P1, {"dim": 100})
    seen_x: list[torch.Tensor] = []
    cfg = MetaTrainConfig(
        teacher="dm",
        teacher_kwargs={"hidden": 8, "layers": 1},
        optimizee=P1,
        optimizee_kwargs={"dim": 100},
        random_scaling=random_scaling,
        random_scale=scale,
        episode_length=6,
        unroll=3,
        episodes=2,
        val_seeds=VAL,
        seed=11,
    )
    trainer = MetaTrainer(cfg, factory=_recording_factory(base, seen_x))
    calls = _record_teacher_calls(trainer)
    cs = []
    for _ in range(2):
        seen_x.clear()
        calls.clear()
        metrics = trainer.train_episode()
        assert not metrics["diverged"] and metrics["steps"] == 6
        assert len(seen_x) == 7 and len(calls) == 6  # x_0 .. x_6; one teacher call per step
        opt = base(metrics["optimizee_seed"])
        grads = torch.stack([_p1_grad(opt, x) for x in seen_x[:6]])  # grad f at the points the loss saw
        fed = torch.stack([feats[:, 0] for feats, _ in calls])  # DM's input: the raw gradient
        c = (fed * grads).sum(0) / grads.square().sum(0)  # least squares per coordinate
        torch.testing.assert_close(fed, c * grads, rtol=1e-4, atol=1e-4)
        steps = torch.stack([b - a for a, b in zip(seen_x[:-1], seen_x[1:], strict=True)])
        updates = torch.stack([u for _, u in calls])
        assert updates.abs().max() > 1e-4
        torch.testing.assert_close(steps, c * updates, rtol=1e-3, atol=2e-6)
        torch.testing.assert_close(seen_x[0], opt.init_params()["x"])  # same starting point, rescaled y
        cs.append(c)
    return cs


def test_random_scaling_rescales_the_optimizee() -> None:
    """``random_scaling``: per episode ``c = exp(U(-s, s))`` per coordinate, the teacher optimises
    ``y`` with loss ``f(c * y)`` from ``y_0 = x_0 / c``; ``s = 0.5`` here."""
    s = 0.5
    cs = _scaled_episode(random_scaling=True, scale=s)
    for c in cs:
        log_c = c.log()
        assert log_c.abs().max() <= s + 1e-3  # within [exp(-s), exp(s)] ...
        assert log_c.max() > 0.8 * s and log_c.min() < -0.8 * s  # ... and spread over it
        assert abs(float(log_c.mean())) < 0.2 * s
        assert float(log_c.std()) == pytest.approx(s / math.sqrt(3), rel=0.25)  # U(-s, s)
    assert (cs[0] - cs[1]).abs().max() > 0.1  # drawn afresh per episode
    # control: without scaling the same inference gives c = 1 (the teacher sees f itself)
    plain = _scaled_episode(random_scaling=False)
    for c in plain:
        torch.testing.assert_close(c, torch.ones_like(c), rtol=0.0, atol=1e-4)


def test_imitation_episode_follows_adam_and_regresses_on_its_updates() -> None:
    """IL episode: the optimizee follows ``torch.optim.Adam(lr=il_lr)`` (the expert drives), the teacher
    sees the gradients along that trajectory, and the meta-loss of each unroll is
    ``mean_k mean_i (u_teacher - u_adam)^2 / il_lr^2`` (its value and its gradient are checked)."""
    il_lr, length, unroll = 0.05, 10, 5  # il_lr differs from Adam's default 1e-3
    base = optimizee_factory(P1)
    seen_x: list[torch.Tensor] = []
    cfg = MetaTrainConfig(
        teacher="rp_small",
        optimizee=P1,
        imitation=True,
        il_prob=1.0,
        il_lr=il_lr,
        episode_length=length,
        unroll=unroll,
        episodes=1,
        val_seeds=VAL,
        seed=5,
    )
    trainer = MetaTrainer(cfg, factory=_recording_factory(base, seen_x))
    initial = copy.deepcopy(trainer.teacher)  # before any meta-step (and before the hook)
    calls = _record_teacher_calls(trainer)
    meta_grads: list[dict[str, torch.Tensor]] = []

    def pre_step(_opt: torch.optim.Optimizer, _args: object, _kwargs: object) -> None:
        grads = {}
        for name, p in trainer.teacher.named_parameters():
            assert p.grad is not None, name
            grads[name] = p.grad.detach().clone()
        meta_grads.append(grads)

    trainer.meta_opt.register_step_pre_hook(pre_step)
    metrics = trainer.train_episode()
    assert metrics["imitation"] and metrics["steps"] == length and len(meta_grads) == length // unroll
    assert len(seen_x) == length + 1 and len(calls) == length

    # the expert: torch.optim.Adam(lr=il_lr) from the same start on the same objective and batches
    opt = base(metrics["optimizee_seed"])
    x = opt.init_params()["x"].requires_grad_(True)
    adam = torch.optim.Adam([x], lr=il_lr)
    batches = opt.batches("train")
    expert_x, expert_g = [x.detach().clone()], []
    for _ in range(length):
        adam.zero_grad()
        opt.loss({"x": x}, next(batches)).backward()
        assert x.grad is not None
        expert_g.append(x.grad.detach().clone())
        adam.step()
        expert_x.append(x.detach().clone())
    for k, (got, want) in enumerate(zip(seen_x, expert_x, strict=True)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"x_{k}: {m}")
    adam_updates = [b - a for a, b in zip(expert_x[:-1], expert_x[1:], strict=True)]
    assert min(float(u.abs().max()) for u in adam_updates) > 0.5 * il_lr  # Adam's first steps ~ il_lr

    # the teacher is fed the features of the gradients along the expert's trajectory
    fs = initial.new_feature_state(expert_g[0].numel())
    for (feats, _), g in zip(calls, expert_g, strict=True):
        torch.testing.assert_close(feats, fs.update(g))

    # meta-loss value: per unroll, the mean over steps of the mean squared update difference / il_lr^2
    sq = [(u - a).square().mean() / il_lr**2 for (_, u), a in zip(calls, adam_updates, strict=True)]
    per_unroll = [sum(sq[i : i + unroll]) / unroll for i in range(0, length, unroll)]
    assert metrics["meta_loss"] == pytest.approx(float(sum(per_unroll) / len(per_unroll)), rel=1e-4)

    # meta-gradient of the first unroll: the same loss replayed on the initial weights
    state = initial.init_state(expert_g[0].numel())
    fs = initial.new_feature_state(expert_g[0].numel())
    replay = torch.zeros(())
    for k in range(unroll):
        u, state = initial(fs.update(expert_g[k]), state)
        torch.testing.assert_close(u.detach(), calls[k][1])
        replay = replay + (u - adam_updates[k]).square().mean() / il_lr**2
    (replay / unroll).backward()
    for name, p in initial.named_parameters():
        assert p.grad is not None
        want = p.grad
        torch.testing.assert_close(
            meta_grads[0][name], want, rtol=1e-3, atol=1e-4 * float(want.abs().max()) + 1e-9
        )


def test_imitation_probability_and_loss() -> None:
    cfg = MetaTrainConfig(
        teacher="rp_small",
        optimizee=P1,
        imitation=True,
        il_prob=0.3,
        episode_length=2,
        unroll=2,
        episodes=200,
        eval_every=1000,
        val_seeds=VAL,
        seed=7,
    )
    result = MetaTrainer(cfg).run()
    frac = sum(h["imitation"] for h in result.history) / len(result.history)
    assert 0.2 < frac < 0.4
    # il_prob = 1: every episode imitates Adam, and the imitation loss falls
    cfg = MetaTrainConfig(
        teacher="rp_small",
        optimizee=P1,
        imitation=True,
        il_prob=1.0,
        episode_length=20,
        unroll=20,
        episodes=40,
        eval_every=1000,
        val_seeds=VAL,
        meta_lr=3e-3,
    )
    result = MetaTrainer(cfg).run()
    assert all(h["imitation"] for h in result.history)
    first = sum(h["meta_loss"] for h in result.history[:5]) / 5
    last = sum(h["meta_loss"] for h in result.history[-5:]) / 5
    assert first > 0.5  # (update - adam_update)^2 / lr^2 of an untrained teacher is O(1)
    assert last < 0.5 * first


def test_resume_is_exact(tmp_path: Path) -> None:
    base = dict(
        teacher="rp_small",
        optimizee=P1,
        episode_length=20,
        eval_every=2,
        val_seeds=VAL[:2],
        random_scaling=True,
        imitation=True,
        il_prob=0.5,
        seed=3,
    )
    straight = MetaTrainer(MetaTrainConfig(episodes=6, **base))
    straight.run()
    first = MetaTrainer(MetaTrainConfig(episodes=4, **base))
    first.run()
    torch.save(first.state_dict(), tmp_path / "trainer.pt")
    sd = torch.load(tmp_path / "trainer.pt", weights_only=True)
    resumed = MetaTrainer(MetaTrainConfig(episodes=6, **base))
    resumed.load_state_dict(sd)
    result = resumed.run()
    assert result.episodes == 6
    for k, v in straight.teacher.state_dict().items():
        assert torch.equal(v, resumed.teacher.state_dict()[k]), k
    assert [h["optimizee_seed"] for h in straight.history] == [h["optimizee_seed"] for h in resumed.history]


def test_meta_train_function_save_and_budgets(tmp_path: Path) -> None:
    cfg = MetaTrainConfig(
        teacher="dm",
        optimizee=P1,
        episode_length=10,
        meta_iterations=3,
        episodes=None,
        val_seeds=VAL[:2],
        unroll=5,
    )
    result = meta_train(cfg)
    assert result.meta_iterations == 3 and result.stop_reason == "meta_iterations"
    assert math.isfinite(result.best_val_loss)
    path = result.save(tmp_path / "dm.pt", meta={"optimizee": P1})
    teacher = load_teacher(path)
    feats = torch.randn(5, 1)
    a, _ = teacher(feats, teacher.init_state(5))
    b, _ = result.teacher()(feats, teacher.init_state(5))
    assert torch.equal(a, b)
    tb = meta_train(
        MetaTrainConfig(
            teacher="rp_small",
            optimizee=P1,
            episodes=None,
            time_budget_s=0.5,
            val_seeds=VAL[:1],
            episode_length=10,
        )
    )
    assert tb.stop_reason == "time_budget"


def test_config_errors_and_hand_rules_cannot_be_trained() -> None:
    with pytest.raises(ValueError, match="no trainable parameters"):
        MetaTrainer(MetaTrainConfig(teacher="sgd", optimizee=P1))
    with pytest.raises(ValueError, match="budget"):
        MetaTrainConfig(episodes=None)
    with pytest.raises(ValueError):
        MetaTrainConfig(il_prob=1.5)


def test_evaluate_teacher_and_run_teacher() -> None:
    fac = optimizee_factory(P1)
    start = fac(VAL[0]).loss(fac(VAL[0]).init_params(), None)  # type: ignore[arg-type]
    losses = run_teacher(TEACHERS.get("sgd")(lr=0.0), fac(VAL[0]), 5)
    assert len(losses) == 6 and losses[0] == pytest.approx(float(start))
    assert evaluate_teacher(TEACHERS.get("sgd")(lr=0.0), fac, VAL[:1], 5) == pytest.approx(float(start))
    adam = evaluate_teacher(TEACHERS.get("adam")(lr=0.05), fac, VAL, 50)
    assert adam < evaluate_teacher(TEACHERS.get("sgd")(lr=0.0), fac, VAL, 50)
    assert evaluate_teacher(TEACHERS.get("sgd")(lr=1e3), fac, VAL[:1], 30) == math.inf


def test_a_checkpoint_taken_mid_run_carries_the_time_spent(tmp_path: Path) -> None:
    """The stage checkpoints from the episode callback, mid-run: the saved state must count the time this run
    has spent, so a resumed run continues the time budget instead of starting it again (it read 0)."""
    base = dict(teacher="rp_small", optimizee=P1, episode_length=20, eval_every=2, val_seeds=VAL[:2], seed=3)
    cfg = MetaTrainConfig(episodes=None, time_budget_s=3.0, **base)
    first = MetaTrainer(cfg)
    saved: dict = {}

    def interrupt(episode: int, metrics: dict) -> bool:
        if episode == 3:
            saved.update(first.state_dict())
            return True  # what Ctrl-C does to the trial after its checkpoint
        return False

    first.run(interrupt)
    assert saved["elapsed_s"] > 0 and saved["elapsed_s"] == pytest.approx(
        first.history[2]["elapsed_s"], abs=0.5
    )
    resumed = MetaTrainer(cfg)
    resumed.load_state_dict(saved)
    result = resumed.run()
    assert result.stop_reason == "time_budget"
    assert 3.0 <= result.elapsed_s < 3.0 + 2.0  # the budget once, not once per resume
    assert [h["episode"] for h in result.history] == list(range(1, result.episodes + 1))  # from episode 1
