"""Meta-training: learning happens, CL and IL behave as specified, resume is exact."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from harness.registry import TEACHERS
from teachers.checkpoint import load_teacher
from teachers.meta_train import (
    Curriculum,
    MetaTrainConfig,
    MetaTrainer,
    evaluate_teacher,
    meta_train,
    optimizee_factory,
    run_teacher,
)

P1 = "quadratic_cos"
VAL = (1_000_000, 1_000_001, 1_000_002, 1_000_003)


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
