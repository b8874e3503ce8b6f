"""scones/settings.py: argument > environment > the project's config file > default, and clear errors."""
from __future__ import annotations

import os

import pytest

from scones import settings
from support import CHECKOUT


@pytest.fixture
def clean(monkeypatch, tmp_path):
    for variable, _ in settings.KEYS.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_without_a_config_file_the_defaults_are_in_the_working_directory(clean):
    assert settings.project().config_path is None
    assert settings.state_dir() == clean / ".scones"
    assert settings.data_dir() == clean / ".scones" / "data"
    assert settings.model_dir() is None
    assert settings.localstack_port(None, 4566) == 4566


def test_pyproject_table_is_found_from_a_subfolder_and_its_paths_are_relative_to_it(clean):
    (clean / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.scones]\ndata_dir = "images"\n'
                                          'model_dir = "models/v2"\nendpoint_port = 9123\n')
    (clean / "tests" / "deep").mkdir(parents=True)
    os.chdir(clean / "tests" / "deep")

    assert settings.project().config_path == clean / "pyproject.toml"
    assert settings.data_dir() == clean / "images"
    assert settings.model_dir() == clean / "models" / "v2"
    assert settings.state_dir() == clean / ".scones"        # the default is in the project, not the subfolder
    assert settings.endpoint_port(None, 8080) == 9123


def test_scones_toml_wins_over_a_pyproject_without_a_scones_table_above_it(clean):
    (clean / "pyproject.toml").write_text('[tool.scones]\nstate_dir = "outer-state"\n')
    inner = clean / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "no-scones-table"\n')
    (inner / "scones.toml").write_text('state_dir = "state"\n')
    os.chdir(inner)

    assert settings.state_dir() == inner / "state"


def test_environment_beats_the_file_and_an_argument_beats_both(clean, monkeypatch):
    (clean / "scones.toml").write_text('data_dir = "from-file"\nlocalstack_port = 4700\n')
    assert settings.data_dir() == clean / "from-file"
    monkeypatch.setenv(settings.DATA_DIR, str(clean / "from-env"))
    monkeypatch.setenv(settings.LOCALSTACK_PORT, "4800")
    assert settings.data_dir() == clean / "from-env"
    assert settings.localstack_port(None, 4566) == 4800
    assert settings.data_dir(clean / "explicit") == clean / "explicit"
    assert settings.localstack_port(4900, 4566) == 4900


@pytest.mark.parametrize("text, message", [
    ('data-dir = "x"\n', "unknown key 'data-dir'"),
    ('endpoint_port = "80a"\n', "endpoint_port in the file of .*scones.toml must be a port number"),
    ('data_dir = 3\n', "data_dir in the file of .*scones.toml must be a path string"),
    ('data_dir = \n', "scones.toml is not valid TOML"),
])
def test_a_malformed_config_names_the_file_and_the_key(clean, text, message):
    (clean / "scones.toml").write_text(text)
    with pytest.raises(settings.SettingsError, match=message):
        settings.data_dir()


def test_a_port_in_the_environment_that_is_no_number_names_the_variable(clean, monkeypatch):
    monkeypatch.setenv(settings.ENDPOINT_PORT, "eighty")
    with pytest.raises(settings.SettingsError, match=r"\$SCONES_ENDPOINT_PORT='eighty' is not a port number"):
        settings.endpoint_port(None, 8080)


def test_the_clone_finds_its_images_through_its_own_pyproject():
    project = settings.project(CHECKOUT)
    assert project.config_path == CHECKOUT / "pyproject.toml"
    assert (project.root / project.values["data_dir"]).resolve() == (CHECKOUT.parent / "shared" / "data").resolve()


def test_the_sandbox_module_spells_its_switch_as_settings_does():
    """sandbox.py runs on its own (it imports nothing of scones), so it spells the variable out; one name for it."""
    from scones.harness.lambda_executor import sandbox

    assert sandbox.SWITCH == settings.LAMBDA_SANDBOX


def test_a_count_setting_is_its_default_unset_and_a_clear_error_when_not_a_whole_number(monkeypatch):
    monkeypatch.delenv(settings.SAGEMAKER_TRAINING_JOBS, raising=False)
    assert settings.whole_number(settings.SAGEMAKER_TRAINING_JOBS, 2) == 2
    monkeypatch.setenv(settings.SAGEMAKER_TRAINING_JOBS, " 5 ")
    assert settings.whole_number(settings.SAGEMAKER_TRAINING_JOBS, 2) == 5
    monkeypatch.setenv(settings.SAGEMAKER_TRAINING_JOBS, "two")
    with pytest.raises(settings.SettingsError, match=f"\\${settings.SAGEMAKER_TRAINING_JOBS}='two' is not a whole number"):
        settings.whole_number(settings.SAGEMAKER_TRAINING_JOBS, 2)
