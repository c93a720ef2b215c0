"""Every experiment config composes, instantiates and runs one fast_dev_run batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from hipnn_pyg.serialization import load_model
from hipnn_pyg.train.resolvers import conf_dir
from hipnn_pyg.train.run import train

from .helpers import QUIET, TINY, compose_config, tiny_model

#: Per experiment: overrides that shrink its data to a few configurations.
SMALL_DATA = {
    "rmd17_ethanol": ["+data.max_frames=20", "data.num_train=8", "data.num_val=4",
                      "data.num_test=4"],
    "rmd17_aspirin": ["+data.max_frames=20", "data.num_train=8", "data.num_val=4",
                      "data.num_test=4"],
    "qm9_u0": ["+data.max_molecules=40", "data.num_train=8", "data.num_val=4",
               "data.num_test=4"],
    "water_deepmd": ["+data.index=':6'", "data.num_train=2", "data.num_val=2",
                     "data.num_test=2"],
    "mlearn_si": ["+data.index=':6'", "data.num_train=4", "data.num_val=2",
                  "data.num_test=2"],
}
#: Experiments on data shipped in the repository (no shared data needed).
SHIPPED_DATA = {
    "rmd17_ethanol_quick": ["data.num_train=16", "data.num_val=8", "data.num_test=8",
                            "+data.max_frames=40"],
    "ethanol_gfn2_dipole": ["data.num_train=8", "data.num_val=4", "data.num_test=4"],
}


#: rMD17 molecules with rmd17_ethanol's recipe: checked against their data files.
RMD17_MORE = ["azobenzene", "benzene", "malonaldehyde", "naphthalene", "paracetamol",
              "salicylic", "uracil"]


def test_every_experiment_is_tested() -> None:
    shipped = {p.stem for p in (conf_dir() / "experiment").glob("*.yaml")}
    # the transfer experiments need a pretrained model: tests/train/test_finetune.py and
    # test_multifidelity.py run them
    pretrained = {"ethanol_ccsdt_finetune", "ethanol_multifidelity"}
    assert shipped == set(SMALL_DATA) | set(SHIPPED_DATA) | pretrained | {
        f"rmd17_{molecule}" for molecule in RMD17_MORE}


@pytest.mark.parametrize("molecule", RMD17_MORE)
def test_rmd17_experiments_name_their_files_and_elements(molecule: str, tmp_path: Path,
                                                         shared_data: Path) -> None:
    import numpy as np

    cfg = compose_config("train", tmp_path, [f"experiment=rmd17_{molecule}"],
                         data_dir=shared_data)
    assert Path(cfg.data.path).name == f"rmd17_{molecule}_train_01.npz"
    assert Path(cfg.data.test_path).name == f"rmd17_{molecule}_test_01.npz"
    elements = set(np.load(cfg.data.path)["nuclear_charges"].tolist())
    assert set(cfg.model.representation.species) == elements
    assert set(np.load(cfg.data.test_path)["nuclear_charges"].tolist()) == elements


def test_tensor_sensitivity_model_trains_from_the_command_line(tmp_path: Path) -> None:
    overrides = ["experiment=rmd17_ethanol_quick", "debug=fdr", "model=hipnn_ts",
                 "model.representation.species=[1,6,8]",
                 *SHIPPED_DATA["rmd17_ethanol_quick"], *tiny_model(), *QUIET]
    cfg = compose_config("train", tmp_path, overrides)
    train(cfg)
    model = load_model(tmp_path / "model.pt")
    assert model.representation.tensor_order == 2


@pytest.mark.parametrize("experiment", sorted(SHIPPED_DATA))
def test_shipped_data_experiment_fast_dev_run(experiment: str, tmp_path: Path) -> None:
    cfg = compose_config("train", tmp_path, [f"experiment={experiment}", "debug=fdr",
                                             *SHIPPED_DATA[experiment], *tiny_model(), *QUIET])
    train(cfg)
    assert (tmp_path / "model.pt").is_file()
    assert load_model(tmp_path / "model.pt").species == [1, 6, 8]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(SMALL_DATA))
def test_experiment_fast_dev_run(experiment: str, tmp_path: Path, shared_data: Path) -> None:
    overrides = [f"experiment={experiment}", "debug=fdr", *SMALL_DATA[experiment], *TINY]
    cfg = compose_config("train", tmp_path, overrides, data_dir=shared_data)
    train(cfg)
    assert (tmp_path / "model.pt").is_file()


def test_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="hidden_chanels"):
        compose_config("train", tmp_path, ["model.hidden_chanels=8"])
    with pytest.raises(ConfigCompositionException, match="experiment"):
        compose_config("train", tmp_path, ["experiment=no_such_experiment"])


def test_missing_checkpoint_for_eval_is_reported(tmp_path: Path) -> None:
    cfg = compose_config("eval", tmp_path, [])
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue, match="ckpt_path"):
        _ = cfg.ckpt_path


@pytest.mark.parametrize("data", ["botnet_ethanol", "ani1_s01"])
def test_data_configs_without_experiment_load(data: str, tmp_path: Path,
                                              shared_data: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_config("train", tmp_path, [f"data={data}"], data_dir=shared_data)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert len(datamodule.train_dataset) > len(datamodule.val_dataset) > 0
    assert set(datamodule.species) <= set(cfg.model.representation.species)


@pytest.mark.parametrize("search", ["grid", "rmd17_width_depth", "rmd17_recipe"])
def test_hparams_search_configs_compose(search: str, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = compose_config("train", tmp_path, [f"hparams_search={search}",
                                             "experiment=rmd17_ethanol"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    # a search over the force weight ranks runs by force error (the loss changes scale)
    swept_weight = "module.loss_weights.forces" in cfg.hydra.sweeper.params
    assert cfg.optimized_metric == ("val/forces_mae" if swept_weight else "val/loss")
    for key in cfg.hydra.sweeper.params:
        # every swept key exists in the composed config (a typo would add a new key)
        assert OmegaConf.select(cfg, key.lstrip("+")) is not None, key


def test_runs_started_in_the_same_second_get_separate_folders(tmp_path: Path) -> None:
    r"""Two runs launched together (a queue, a job array) must not share a run folder,
    where the later would overwrite the other's model.pt: the name goes below a second."""
    first, second = (compose_config("train", tmp_path).hydra for _ in range(2))
    assert first.run.dir != second.run.dir and first.sweep.dir != second.sweep.dir
    assert "/runs/" in first.run.dir and "/multiruns/" in first.sweep.dir
