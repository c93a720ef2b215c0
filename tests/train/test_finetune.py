"""Fine-tuning: freeze presets, refitted self-energies, runs from .pt and .ckpt, clear
errors for a model that does not fit, and an exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hipnn_pyg import HIPNN
from hipnn_pyg.data import ASEDataset
from hipnn_pyg.nn.predict import predict
from hipnn_pyg.serialization import load_model, save_model
from hipnn_pyg.train.finetune import FREEZE_PRESETS, freeze, hidden_layers
from hipnn_pyg.train.optim import parameter_groups
from hipnn_pyg.train.resolvers import repo_root
from hipnn_pyg.train.run import train
from hipnn_pyg.train.self_energy import refit_self_energies

from .helpers import QUIET, SHIPPED, TINY, compose_config, crash_at, results, tiny_model

CCSDT = repo_root() / "data" / "ethanol_ccsdt" / "ethanol_ccsdt.extxyz"
#: A short energy-only fine-tune on 16/8/8 CCSD(T) frames.
FINETUNE = [
    "experiment=ethanol_ccsdt_finetune",
    *tiny_model(),
    *QUIET,
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=8",
    "trainer.max_epochs=3",
]


def _model() -> HIPNN:
    torch.manual_seed(0)
    return HIPNN(species=(1, 6, 8), hidden_channels=8, num_interactions=2, num_atom_layers=3,
                 num_sensitivities=4)


#: Per preset: the parameter-name prefixes that stay trainable in a 2-interaction model
#: with 3 on-site layers per block.
TRAINABLE = {
    "none": ("representation.", "heads."),
    "readout": ("heads.",),
    "last_interaction": ("representation.interactions.1.", "representation.atom_layers.1.",
                         "heads."),
    # hidden layers I0 A00 A01 A02 I1 A10 A11 A12: the 2nd, 4th, 6th, 8th train
    "ani1ccx": ("representation.atom_layers.0.0.", "representation.atom_layers.0.2.",
                "representation.atom_layers.1.0.", "representation.atom_layers.1.2.",
                "heads."),
}


def test_hidden_layers_in_order() -> None:
    assert hidden_layers(_model()) == [
        "representation.interactions.0", *(f"representation.atom_layers.0.{j}" for j in range(3)),
        "representation.interactions.1", *(f"representation.atom_layers.1.{j}" for j in range(3)),
    ]


@pytest.mark.parametrize("preset", FREEZE_PRESETS)
def test_preset_freezes_exactly_its_parameters(preset: str) -> None:
    model = _model()
    summary = freeze(model, preset)
    names = dict(model.named_parameters())
    expected_trainable = {n for n in names if n.startswith(TRAINABLE[preset])}
    assert {n for n, p in names.items() if p.requires_grad} == expected_trainable
    assert set(summary.frozen_names) == set(names) - expected_trainable
    assert summary.num_frozen + summary.num_trainable == sum(p.numel() for p in names.values())

    before = {n: p.detach().clone() for n, p in names.items()}
    optimizer = torch.optim.Adam(parameter_groups(model), lr=1e-2)
    z = torch.tensor([8, 1, 1, 6])
    pos = torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [0.5, 0.5, 1.3]],
                       requires_grad=True)
    for _ in range(3):
        optimizer.zero_grad()
        energy = model(z, pos).sum()
        forces = -torch.autograd.grad(energy, pos, create_graph=True)[0]
        (energy ** 2 + forces.pow(2).sum()).backward()
        optimizer.step()
    for name, parameter in names.items():
        if name in expected_trainable:
            continue
        assert parameter.grad is None, name
        assert torch.equal(parameter, before[name]), name
    changed = [n for n in expected_trainable if not torch.equal(names[n], before[n])]
    assert changed, "no trainable parameter moved"


def test_freeze_patterns_and_errors() -> None:
    model = _model()
    summary = freeze(model, ["representation.interactions.*.sensitivity.*"])
    assert summary.frozen_names and all(".sensitivity." in n for n in summary.frozen_names)
    with pytest.raises(ValueError, match="pattern 'nope.*' names no parameter"):
        freeze(model, ["nope.*"])
    with pytest.raises(ValueError, match="unknown preset 'firstlayer'"):
        freeze(model, "firstlayer")
    with pytest.raises(ValueError, match="freezes every parameter"):
        freeze(model, ["*"])


def test_refit_self_energies_absorbs_an_offset() -> None:
    dataset = ASEDataset(CCSDT)[torch.arange(20)]
    batch = dataset.gather(range(len(dataset)))
    model = _model()
    model.set_self_energies(torch.tensor([-13.6, -1030.0, -2040.0]))

    def mean_residual() -> float:
        with torch.no_grad():
            energy = predict(model, batch, compute_forces=False)["energy"].double()
        return float((energy - batch.energy).mean())

    assert abs(mean_residual()) > 1.0
    with pytest.warns(UserWarning, match="rank 1 < 3"):  # one composition: only the sum
        refit_self_energies(model, dataset)
    # float32 self-energies of ~-470 eV round at ~3e-5 eV each
    assert abs(mean_residual()) < 1e-3


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("pretrain")
    train(compose_config("train", run, [*SHIPPED, *TINY, "trainer.max_epochs=1", "test=false"]))
    return run


@pytest.mark.slow
@pytest.mark.parametrize("source", ["model.pt", "checkpoints/last.ckpt"])
def test_finetune_keeps_frozen_weights(pretrained: Path, source: str, tmp_path: Path) -> None:
    before = load_model(pretrained / "model.pt")
    train(compose_config("train", tmp_path, [*FINETUNE, f"finetune.from={pretrained / source}",
                                             "finetune.freeze=ani1ccx"]))
    after = load_model(tmp_path / "model.pt")  # an ordinary model file
    summary = results(tmp_path)
    assert summary["finetune"]["frozen"] > 0 and summary["finetune"]["trainable"] > 0
    assert "test/energy_mae" in summary["metrics"]
    old, new = dict(before.named_parameters()), dict(after.named_parameters())
    # one interaction, one on-site layer: ani1ccx freezes the interaction only
    frozen = [name for name in old if name.startswith("representation.interactions.0.")]
    assert frozen
    for name in old:
        if name in frozen:
            assert torch.equal(new[name], old[name]), name
        else:
            assert not torch.equal(new[name], old[name]), name
    # self-energies refitted to the CCSD(T) energies (another offset than PBE's)
    assert not torch.equal(after.self_energies, before.self_energies)


def test_finetune_refuses_a_model_that_does_not_fit(pretrained: Path, tmp_path: Path) -> None:
    source = pretrained / "model.pt"
    for override, message in [
        ("model.representation.hidden_channels=16", r"hidden_channels=16 contradicts .*has "
                                                    r"model\.representation\.hidden_channels=8"),
        ("model.representation.sensitivity.cutoff=4.0", r"cutoff=4.0 contradicts .*cutoff=6\.5"),
        ("model=hipnn_charges", "the architecture comes from that file"),
    ]:
        with pytest.raises(ValueError, match=message):
            train(compose_config("train", tmp_path, [*FINETUNE, f"finetune.from={source}",
                                                     override]))
    hydrogen_carbon = tmp_path / "hc.pt"
    save_model(HIPNN(species=(1, 6), hidden_channels=8, num_interactions=1), hydrogen_carbon)
    overrides = [o for o in FINETUNE if not o.startswith("model.")]
    with pytest.raises(ValueError, match=r"elements \[8\] that the pretrained model .*hc\.pt"):
        train(compose_config("train", tmp_path, [*overrides, f"finetune.from={hydrogen_carbon}"]))
    with pytest.raises(ValueError, match="finetune.from is required by this experiment"):
        train(compose_config("train", tmp_path, FINETUNE))


@pytest.mark.slow
def test_killed_finetune_resumes_exactly(pretrained: Path, tmp_path: Path) -> None:
    run = [*FINETUNE, f"finetune.from={pretrained / 'model.pt'}", "module.scheduler.patience=0",
           "test=false"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train(compose_config("train", whole, run))
    crash = crash_at(epoch=2, batch=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_config("train", broken, [*run, *crash]))
    train(compose_config("train", broken, [*run, "resume=true"]))
    expected, actual = (torch.load(p / "checkpoints" / "last.ckpt", weights_only=True)
                        for p in (whole, broken))
    assert expected["global_step"] == actual["global_step"]
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(actual["state_dict"][key], value, rtol=1e-6, atol=1e-7)
    want, got = results(whole)["metrics"], results(broken)["metrics"]
    assert got["val/energy_mae"] == pytest.approx(want["val/energy_mae"], rel=1e-6)
