"""Where configs, shipped data, reference data and logs are looked up, for a checkout,
for ``$HIPNN_ROOT`` and for an installed wheel (no checkout around the package)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from hipnn_pyg.train import resolvers

# the checkout whose hipnn_pyg is imported (PYTHONPATH or an editable install)
REPO = Path(resolvers.__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_hipnn_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HIPNN_ROOT", "HIPNN_CONF_DIR", "HIPNN_DATA_DIR", "HIPNN_LOG_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    r"""The package as a wheel installs it: site-packages/hipnn_pyg with conf/ and
    shipped_data/ inside, no checkout around it."""
    package = tmp_path / "site-packages" / "hipnn_pyg"
    (package / "conf").mkdir(parents=True)
    (package / "shipped_data").mkdir()
    monkeypatch.setattr(resolvers, "_PACKAGE_DIR", package)
    monkeypatch.setattr(resolvers, "BUNDLED_CONF_DIR", package / "conf")
    monkeypatch.setattr(resolvers, "BUNDLED_DATA_DIR", package / "shipped_data")
    monkeypatch.chdir(tmp_path)
    return package


def test_checkout_uses_its_own_folders() -> None:
    assert resolvers.checkout_root() == REPO
    assert resolvers.conf_dir() == REPO / "conf"
    assert resolvers.shipped_data_dir() == REPO / "data"
    assert resolvers.reference_data_dir() == (REPO.parent / "shared" / "data").resolve()


def test_installed_package_uses_bundled_folders_and_no_cwd_data(installed: Path) -> None:
    assert resolvers.checkout_root() is None
    assert resolvers.conf_dir() == installed / "conf"
    assert resolvers.shipped_data_dir() == installed / "shipped_data"
    assert resolvers.repo_root() == Path.cwd()  # only for ./logs
    assert resolvers.reference_data_dir() == Path(resolvers.DATA_DIR_UNSET)
    assert not Path(resolvers.DATA_DIR_UNSET).exists()


def test_environment_variables_take_precedence(installed: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIPNN_ROOT", str(REPO))
    assert resolvers.conf_dir() == REPO / "conf"
    assert resolvers.shipped_data_dir() == REPO / "data"
    monkeypatch.setenv("HIPNN_CONF_DIR", str(tmp_path / "my_conf"))
    monkeypatch.setenv("HIPNN_DATA_DIR", str(tmp_path / "my_data"))
    assert resolvers.conf_dir() == tmp_path / "my_conf"
    assert resolvers.reference_data_dir() == tmp_path / "my_data"


def test_no_config_folder_names_what_was_tried(installed: Path) -> None:
    (installed / "conf").rmdir()
    with pytest.raises(FileNotFoundError, match="HIPNN_CONF_DIR") as error:
        resolvers.conf_dir()
    assert str(installed / "conf") in str(error.value)


def _config(data_dir: Path, file: str) -> DictConfig:
    return OmegaConf.create({"paths": {"data_dir": str(data_dir)},
                             "data": {"path": f"${{paths.data_dir}}/{file}", "test_path": None}})


def test_missing_reference_file_says_where_it_was_looked_for(installed: Path) -> None:
    config = _config(resolvers.reference_data_dir(), "rmd17/rmd17_ethanol_train_01.npz")
    with pytest.raises(FileNotFoundError) as error:
        resolvers.check_data_paths(config)
    message = str(error.value)
    assert f"data.path={resolvers.DATA_DIR_UNSET}/rmd17/rmd17_ethanol_train_01.npz" in message
    assert "installed outside a checkout" in message and "set HIPNN_DATA_DIR=" in message


def test_check_data_paths_passes_existing_and_unset_files(tmp_path: Path) -> None:
    (tmp_path / "train.npz").write_bytes(b"")
    resolvers.check_data_paths(_config(tmp_path, "train.npz"))
    resolvers.check_data_paths(OmegaConf.create({"data": {"path": "???"}}))
    resolvers.check_data_paths(OmegaConf.create({"task_name": "md"}))
    with pytest.raises(FileNotFoundError, match="set in the config or on the command line"):
        resolvers.check_data_paths(_config(tmp_path, "absent.npz"))
