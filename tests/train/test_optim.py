"""Optimizer and schedule from the module's `_partial_` configs: parameter groups,
frozen parameters, warm-up and the plateau step."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from hipnn_pyg import HIPNN
from hipnn_pyg.train.losses import regularized_weights
from hipnn_pyg.train.optim import parameter_groups, step_plateau, warm_up

from .helpers import compose_config


def _model() -> HIPNN:
    return HIPNN(species=(1, 6), hidden_channels=4, num_interactions=1, num_atom_layers=1)


def test_parameter_groups_decay_weights_only_and_leave_frozen_out() -> None:
    model = _model()
    decayed, plain = parameter_groups(model)
    assert {id(p) for p in decayed["params"]} == {id(p) for p in regularized_weights(model)}
    assert plain["weight_decay"] == 0.0 and "weight_decay" not in decayed
    # every other parameter (biases, sensitivities, self-energies) once, without decay
    assert sorted(id(p) for p in decayed["params"] + plain["params"]) == sorted(
        id(p) for p in model.parameters())
    model.representation.interactions.requires_grad_(False)
    kept = {id(p) for group in parameter_groups(model) for p in group["params"]}
    assert kept and not kept & {id(p) for p in model.representation.interactions.parameters()}


def _configured(tmp_path: Path, overrides: list[str]) -> dict:
    cfg = compose_config("train", tmp_path, overrides)
    return instantiate(cfg.module, model=_model()).configure_optimizers()


def test_default_config_builds_adam_and_plateau(tmp_path: Path) -> None:
    configured = _configured(tmp_path, [])
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 1e-3
    assert optimizer.defaults["fused"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (scheduler.factor, scheduler.patience, scheduler.min_lrs[0]) == (0.5, 5, 1e-6)
    assert configured["lr_scheduler"]["monitor"] == "val/loss"


def test_overrides_swap_optimizer_and_drop_the_schedule(tmp_path: Path) -> None:
    configured = _configured(tmp_path, ["module.optimizer._target_=torch.optim.AdamW",
                                        "module.optimizer.weight_decay=0.01",
                                        "module.scheduler=null"])
    optimizer = configured["optimizer"]
    assert type(optimizer) is torch.optim.AdamW and "lr_scheduler" not in configured
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


def test_the_fused_step_is_the_per_tensor_step(tmp_path: Path) -> None:
    fused_model, loop_model = _model(), _model()
    loop_model.load_state_dict(fused_model.state_dict())
    fused = _configured(tmp_path, [])["optimizer"]
    fused = type(fused)(parameter_groups(fused_model), **fused.defaults)
    loop = torch.optim.Adam(parameter_groups(loop_model), lr=1e-3)
    for _ in range(3):
        for model, optimizer in ((fused_model, fused), (loop_model, loop)):
            for p in model.parameters():
                p.grad = torch.full_like(p, 0.5) + p.detach()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("overrides", "kind", "fused"), [
    (["module.optimizer._target_=torch.optim.AdamW"], torch.optim.AdamW, True),
    (["module.optimizer._target_=torch.optim.RMSprop"], torch.optim.RMSprop, None),
    (["+module.optimizer.fused=false"], torch.optim.Adam, False),
    (["+module.optimizer.foreach=true"], torch.optim.Adam, None),
    (["+module.optimizer.fused=null"], torch.optim.Adam, None),  # set: torch's default
])
def test_fused_where_the_optimizer_takes_it_and_the_config_leaves_it(
        tmp_path: Path, overrides: list[str], kind: type, fused: bool | None) -> None:
    optimizer = _configured(tmp_path, overrides)["optimizer"]
    assert type(optimizer) is kind and optimizer.defaults.get("fused") == fused


def test_no_fused_optimizer_where_mixed_precision_clips() -> None:
    # Lightning refuses to clip gradients that an optimizer unscales itself
    from lightning import Trainer

    from hipnn_pyg.train.optim import build_optimizer, clips_mixed_precision

    def trainer(**options: object) -> Trainer:
        return Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False, **options)

    assert clips_mixed_precision(trainer(precision="16-mixed", gradient_clip_val=10.0))
    assert not clips_mixed_precision(trainer(precision="16-mixed"))
    assert not clips_mixed_precision(trainer(gradient_clip_val=10.0))
    assert not clips_mixed_precision(None)
    built = build_optimizer(partial(torch.optim.Adam, lr=1e-3), parameter_groups(_model()),
                            fused=False)
    assert not built.defaults["fused"]


def test_a_checkpoint_of_either_form_loads_into_the_form_built() -> None:
    from hipnn_pyg.train.optim import build_optimizer

    model = _model()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for written, built_fused in ((None, True), (True, False)):
        writer = torch.optim.Adam(parameter_groups(model), lr=1e-3, fused=written)
        writer.step()
        optimizer = build_optimizer(partial(torch.optim.Adam, lr=1e-3),
                                    parameter_groups(model), fused=built_fused)
        optimizer.load_state_dict(writer.state_dict())
        assert all(bool(g["fused"]) == built_fused for g in optimizer.param_groups)
        optimizer.step()  # the moments carry over: same state keys in both forms


def test_warm_up_is_linear_to_the_configured_rate() -> None:
    optimizer = torch.optim.Adam(parameter_groups(_model()), lr=0.4)
    rates = []
    for step in range(5):
        warm_up(optimizer, step, warmup_steps=4)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])


def test_step_plateau_needs_the_monitor() -> None:
    optimizer = torch.optim.SGD(_model().parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    trainer = SimpleNamespace(lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)])
    step_plateau(trainer, {"val/loss": 1.0}, "val/loss")  # type: ignore[arg-type]
    step_plateau(trainer, {"val/loss": 2.0}, "val/loss")  # type: ignore[arg-type]
    assert optimizer.param_groups[0]["lr"] == 0.5
    with pytest.raises(KeyError, match="scheduler monitor 'val/x'"):
        step_plateau(trainer, {"val/loss": 1.0}, "val/x")  # type: ignore[arg-type]


def test_a_step_schedule_steps_every_optimizer_step(tmp_path: Path) -> None:
    from hipnn_pyg.train.optim import configure_optimization

    def cosine(optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)

    def adam(groups):
        return torch.optim.Adam(groups, lr=1e-3)

    configured = configure_optimization(_model(), adam, cosine, "val/loss", "step")
    assert configured["lr_scheduler"]["interval"] == "step"
    with pytest.raises(ValueError, match="plateau schedule follows an epoch metric"):
        configure_optimization(_model(), adam, torch.optim.lr_scheduler.ReduceLROnPlateau,
                               "val/loss", "step")
    with pytest.raises(ValueError, match="choose 'epoch' or 'step'"):
        configure_optimization(_model(), adam, cosine, "val/loss", "batch")
    configured = _configured(tmp_path, ["module.scheduler_interval=step",
                                        "module.scheduler=null"])
    assert "lr_scheduler" not in configured
