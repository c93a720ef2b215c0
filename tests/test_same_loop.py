"""scripts/same_loop.py's models and recipes: our start from the training split, MACE's
model (skipped without the ``peers`` extra), the schedules, and bench_pareto's front."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "rmd17_ethanol" / "rmd17_ethanol_train_01.npz"
WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def same_loop() -> ModuleType:
    return _script("same_loop")


@pytest.fixture(scope="module")
def frames(same_loop: ModuleType) -> dict[str, torch.Tensor]:
    data = same_loop.frames(SHIPPED)
    return {key: value[:32] for key, value in data.items()}


def test_ours_starts_at_the_training_energies(same_loop: ModuleType, frames: dict,
                                              one_thread: None) -> None:
    # the plain loop's untrained HIP-NN-TS was 13-18 eV off before the start was fitted
    offset = float(frames["energy"].mean())
    errors = {}
    for init in ("mean", "fit"):
        torch.manual_seed(0)
        options = same_loop.ModelOptions(width=16, init=init, sensitivities=10,
                                         interactions=2)
        model, run, config = same_loop.build("hipnn_pyg_ts2", frames, offset, options)
        errors[init] = same_loop.errors(run, frames, offset)[0]
    assert config == {"shape": dict(same_loop.SHAPE, features=16, sensitivities=10,
                                    interactions=2), "tensor_order": 2}
    assert model.representation.num_interactions == 2
    assert errors["fit"] < 1.0 < errors["mean"], errors  # eV per molecule


def test_mace_variant_builds_and_takes_a_step(same_loop: ModuleType, frames: dict,
                                              one_thread: None) -> None:
    before = os.environ.get(WEIGHTS_ONLY)
    same_loop.mace_available()  # imports mace, if installed, without its side effect
    pytest.importorskip("mace")  # CI does not install the peers extra
    assert os.environ.get(WEIGHTS_ONLY) == before  # weights-only loading left alone
    recipes = _script("same_loop_recipes")
    offset = float(frames["energy"].mean())
    torch.manual_seed(0)
    model, run, config = same_loop.build("mace", frames, offset)
    assert sum(p.numel() for p in model.parameters()) == 68_464
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert config["zs"] == [1, 6, 8] and 5 < config["avg_num_neighbors"] < 9
    rms = float(frames["forces"].double().square().mean().sqrt())
    assert config["scale"] == pytest.approx(rms)  # MACE's rms_forces_scaling
    assert same_loop.errors(run, frames, offset)[0] < 1.0  # E0s: starts within 1 eV

    plan = recipes.recipe_for("own", "mace")
    groups = recipes.parameter_groups(model, "mace", plan.weight_decay)
    assert [g["weight_decay"] for g in groups] == [5e-7, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    optimizer = torch.optim.Adam(groups, lr=plan.lr, amsgrad=plan.amsgrad)
    start = [p.detach().clone() for p in model.parameters()]
    index = torch.arange(plan.batch)
    loss = same_loop.loss_of(run, frames["z"][index], frames["pos"][index],
                             frames["energy"][index] - offset, frames["forces"][index], True,
                             plan.force_weight, plan.energy_weight)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert math.isfinite(float(loss.detach()))
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    moved = sum(not torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))
    assert moved > len(start) // 2

    # bench_pareto.py rebuilds it from the saved config and weights
    models = _script("same_loop_models")
    rebuilt = models.mace_from_config(**config)
    rebuilt.load_state_dict(model.state_dict())
    again = models.mace_function(rebuilt, config["zs"], 5.0)
    energy, forces = run(frames["z"][:4], frames["pos"][:4], False)
    energy2, forces2 = again(frames["z"][:4], frames["pos"][:4], False)
    torch.testing.assert_close(energy2, energy)
    torch.testing.assert_close(forces2, forces)


def test_our_own_recipe_is_the_rmd17_experiments() -> None:
    # The benchmark's "own recipe" must stay what `experiment=rmd17_<molecule>` trains with
    # (its schedule aside: the benchmark decays over its CPU-time budget).
    from omegaconf import OmegaConf

    conf = OmegaConf.load(REPO / "conf" / "experiment" / "rmd17_ethanol.yaml")
    plan = _script("same_loop_recipes").recipe_for("own", "hipnn_pyg")
    assert (plan.lr, plan.force_weight, plan.energy_weight, plan.batch, plan.warmup,
            plan.clip, plan.ema, plan.min_lr, plan.force_loss) == (
        conf.module.optimizer.lr, conf.module.loss_weights.forces,
        conf.module.loss_weights.energy, conf.data.batch_size, conf.module.warmup_steps,
        conf.trainer.gradient_clip_val, conf.callbacks.ema.decay, conf.module.scheduler.min_lr,
        conf.module.force_loss)
    # The model's shape too, but for the sensitivities (the benchmark's `--sensitivities 8`).
    shape, model = _script("same_loop_models").SHAPE, conf.model.representation
    assert (shape["features"], shape["interactions"], shape["atom_layers"], shape["soft_min"],
            shape["soft_max"], shape["cutoff"]) == (
        model.hidden_channels, model.num_interactions, model.num_atom_layers,
        model.sensitivity.soft_min_distance, model.sensitivity.soft_max_distance,
        model.sensitivity.cutoff)


def test_schedules_warm_up_decay_and_stage_two() -> None:
    recipes = _script("same_loop_recipes")
    parameter = torch.nn.Parameter(torch.zeros(1))
    plan = recipes.recipe_for("own", "hipnn_pyg")
    optimizer = torch.optim.Adam([parameter], lr=plan.lr)
    schedule = recipes.Schedule(optimizer, plan)
    assert schedule.before_step(0, 0.0) == pytest.approx(plan.lr / plan.warmup)
    assert schedule.before_step(plan.warmup, 0.5) == pytest.approx((plan.lr + plan.min_lr) / 2)
    assert schedule.before_step(plan.warmup, 1.0) == pytest.approx(plan.min_lr)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(plan.min_lr)

    plan = recipes.recipe_for("own", "mace", patience=0)
    optimizer = torch.optim.Adam([parameter], lr=plan.lr)
    schedule = recipes.Schedule(optimizer, plan)
    schedule.after_epoch(10, 1.0)
    schedule.after_epoch(20, 2.0)  # worse: cut by 0.8 at patience 0
    assert schedule.before_step(21, 0.5) == pytest.approx(0.8 * plan.lr)
    schedule.start_stage_two()
    schedule.after_epoch(30, 3.0)  # the plateau no longer acts
    assert schedule.before_step(31, 0.9) == plan.stage_two_lr
    with pytest.raises(ValueError, match="no 'own' recipe for hippynn"):
        recipes.recipe_for("own", "hippynn")


def test_pareto_front() -> None:
    pareto = _script("bench_pareto")
    points = [(10.0, 5.0), (20.0, 6.0), (15.0, 7.0), (5.0, 4.0), (20.0, 8.0)]
    assert pareto.pareto_front(points) == [3, 0, 1]  # by speed; (15, 7), (20, 8) beaten


def test_the_pareto_figure_is_redrawn_from_its_record(tmp_path: Path) -> None:
    # A record of two rows (one ours, one MACE), as bench_pareto.py writes it.
    pareto = _script("bench_pareto")
    rows = [{"label": "HIP-NN, width 64 (266k)", "model_config": {"tensor_order": 0},
             "molecule": "ethanol", "molecule_steps_per_s": 230.0,
             "test_forces_mae_meV_per_A": 18.2, "water_atoms": 12288,
             "water_atom_steps_per_s": 6300.0},
            {"label": "MACE 32x0e+32x1o (68k)", "model_config": {"size": "mace"},
             "molecule": "ethanol", "molecule_steps_per_s": 83.0,
             "test_forces_mae_meV_per_A": 19.6, "water_atoms": 1536,
             "water_atom_steps_per_s": 700.0}]
    record = {"command": "python scripts/bench_pareto.py " + "a.json " * 60, "commit": "abc1234",
              "date": "2026-12-06T17:11", "rows": rows}
    (tmp_path / "pareto.json").write_text(json.dumps(record))
    pareto.replot(tmp_path)
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    caption = pareto.note(record).splitlines()
    assert len(caption) > 2 and caption[-1] == "commit abc1234, 2026-12-06T17:11"
    assert max(len(line) for line in caption) <= 190


def test_fit_errors_rebuild_a_run_and_reproduce_its_test_error(
        same_loop: ModuleType, tmp_path: Path, one_thread: None) -> None:
    # A few seconds of training on the shipped split; the rebuilt model must give the
    # test error its record holds, and train / validation errors beside it.
    rmd17 = tmp_path / "rmd17"
    rmd17.mkdir()
    for name in ("rmd17_ethanol_train_01.npz", "rmd17_ethanol_test_01.npz"):
        (rmd17 / name).symlink_to(SHIPPED.parent / name)
    record = tmp_path / "ethanol_hipnn_pyg_own.json"
    result = same_loop.train("hipnn_pyg", "ethanol", 0.03, tmp_path, 1,
                             record.with_suffix(".weights.pt"), recipe="own",
                             recipe_changes={"force_weight": 100.0, "lr": 3e-3},
                             options=same_loop.ModelOptions(width=8))
    assert result["settings"]["force_weight"] == 100.0  # --force-weight replaces 10
    assert result["settings"]["lr"] == 3e-3  # --lr replaces 2e-3
    record.write_text(json.dumps(result))
    errors = _script("same_loop_fit").fit_errors(record, tmp_path)
    assert list(errors) == ["train", "val", "test"]
    assert math.isclose(errors["test"][1], result["test_forces_mae_meV_per_A"], rel_tol=1e-5)
    assert all(math.isfinite(value) for pair in errors.values() for value in pair)


def test_job_names_and_labels_keep_each_replaced_setting_apart() -> None:
    bench = _script("bench_accuracy")

    def name(molecule: str, variant: str, seed: int, *flags: str) -> str:
        args = bench.parse_args(["--same-loop", variant, *flags])
        args.seeds = args.seeds or [args.seed]
        return bench._job_name(molecule, variant, seed, args)

    # The names of existing records (a reused --output keeps runs by name).
    assert name("ethanol", "mace", 1) == "ethanol_mace"
    assert name("ethanol", "hipnn_pyg_ts2", 2, "--recipe", "own", "--seeds", "1", "2",
                "--weight-decay", "0.01", "--force-weight", "100") == \
        "ethanol_hipnn_pyg_ts2_wd0.01_fw100_own_s2"
    assert name("aspirin", "hipnn_pyg", 1, "--recipe", "own", "--width", "32",
                "--sensitivities", "10") == "aspirin_hipnn_pyg_w32_sens10_own"
    assert name("aspirin", "hipnn_pyg_ts2", 1, "--recipe", "own", "--sensitivities", "10",
                "--lr", "2e-3", "--batch", "8") == "aspirin_hipnn_pyg_ts2_sens10_lr0.002_b8_own"
    assert name("aspirin", "hipnn_pyg_ts2", 1, "--recipe", "own", "--sensitivities", "10",
                "--interactions", "2") == "aspirin_hipnn_pyg_ts2_sens10_int2_own"
    assert name("ethanol", "hipnn_pyg_ts2", 1, "--recipe", "own", "--sensitivities", "8",
                "--force-loss", "mse") == "ethanol_hipnn_pyg_ts2_sens8_mseloss_own"
    # Every replaced setting is in the name: a run with another schedule is not "kept".
    assert name("ethanol", "mace", 1, "--schedule", "cosine") == "ethanol_mace_cosine"
    args = bench.parse_args(["--same-loop", "hipnn_pyg_ts2", "mace", "--sensitivities", "10",
                             "--lr", "2e-3"])
    assert bench._variant_label("hipnn_pyg_ts2", args) == \
        "hipnn_pyg_ts2 (10 sensitivities) (lr 0.002)"
    assert bench._variant_label("mace", args) == "mace (lr 0.002)"  # a model setting of ours
    args = bench.parse_args(["--same-loop", "hipnn_pyg", "hippynn", "--readout-decay", "0.01"])
    assert bench._variant_label("hipnn_pyg", args) == "hipnn_pyg (readout decay 0.01)"
    assert bench._variant_label("hippynn", args) == "hippynn"  # ours only
    args = bench.parse_args(["--same-loop", "hipnn_pyg_ts2", "mace", "--force-loss", "mse"])
    assert bench._variant_label("hipnn_pyg_ts2", args) == "hipnn_pyg_ts2 (mse force loss)"
    assert bench._variant_label("mace", args) == "mace"  # MACE keeps its own loss
    assert "--force-loss" not in bench._run_arguments(args, "ethanol", "mace", 1, Path("x"))


def test_a_resumed_output_keeps_only_runs_of_the_same_recipe(tmp_path: Path) -> None:
    bench, recipes = _script("bench_accuracy"), _script("same_loop_recipes")
    args = bench.parse_args(["--same-loop", "hipnn_pyg_ts2", "--recipe", "own"])
    record = tmp_path / "ethanol_hipnn_pyg_ts2_own.json"
    settings = dataclasses.asdict(recipes.recipe_for("own", "hipnn_pyg"))
    record.write_text(json.dumps({"settings": settings}))
    bench._check_kept(record, "hipnn_pyg_ts2", args)  # the same recipe: kept
    record.write_text(json.dumps({"settings": {**settings, "lr": 1e-3}}))  # an older default
    with pytest.raises(SystemExit, match=r"other settings .* lr 0.001 \(now 0.002\)"):
        bench._check_kept(record, "hipnn_pyg_ts2", args)
    assert json.loads(record.read_text())["settings"]["lr"] == 1e-3  # left as it was
    # records before the force loss was a recipe setting: beside it, or MSE when absent
    before = {key: value for key, value in settings.items() if key != "force_loss"}
    record.write_text(json.dumps({"settings": before, "force_loss": "norm"}))
    bench._check_kept(record, "hipnn_pyg_ts2", args)
    record.write_text(json.dumps({"settings": before}))
    with pytest.raises(SystemExit, match=r"force_loss mse \(now norm\)"):
        bench._check_kept(record, "hipnn_pyg_ts2", args)


def test_replaced_settings_reach_train_through_both_command_lines(
        same_loop: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # bench_accuracy's flags -> same_loop.py's command line -> train()'s arguments.
    import inspect

    bench = _script("bench_accuracy")
    args = bench.parse_args(["--same-loop", "hipnn_pyg_ts2", "--recipe", "own",
                             "--sensitivities", "10", "--lr", "2e-3", "--batch", "8",
                             "--force-weight", "100", "--interactions", "2",
                             "--force-loss", "mse",
                             "--data-dir", str(tmp_path)])
    output = tmp_path / "run.json"
    arguments = bench._run_arguments(args, "aspirin", "hipnn_pyg_ts2", 3, output)
    received: dict = {}
    signature = inspect.signature(same_loop.train)

    def fake_train(*given: object, **named: object) -> dict:
        received.update(signature.bind(*given, **named).arguments)
        return {}

    monkeypatch.setattr(same_loop, "train", fake_train)
    monkeypatch.setattr(sys, "argv", ["same_loop.py", *arguments])
    same_loop.main()
    assert {key: received[key] for key in ("molecule", "seed", "recipe")} == \
        {"molecule": "aspirin", "seed": 3, "recipe": "own"}
    assert {key: value for key, value in received["recipe_changes"].items()
            if value is not None} == \
        {"lr": 2e-3, "batch": 8, "force_weight": 100.0, "force_loss": "mse"}
    assert received["options"] == same_loop.ModelOptions(sensitivities=10, interactions=2)
    assert json.loads(output.read_text())["command"].endswith("--data-dir " + str(tmp_path))
