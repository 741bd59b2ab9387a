"""Configuration precedence: defaults < config file < RHEI_* environment < command-line flags."""

from __future__ import annotations

import pytest

from rhei_lake.config import LakeConfig
from rhei_lake.config_file import environment_options, read_config_file
from rhei_lake.errors import ConfigError
from tests.support.rh import one_error_line, rh

FIELDS = set(LakeConfig.model_fields) | {"metrics_port"}


def test_environment_options_pick_fields_and_decode_json():
    env = {
        "RHEI_STORAGE": "s3://bucket/lake",
        "RHEI_SYNC_INTERVAL": "0.5",
        "RHEI_STORAGE_OPTIONS": '{"AWS_REGION": "eu-west-1"}',
        "RHEI_METRICS_PORT": "9108",
        "RHEI_CI": "1",  # not an option: left alone, silently
        "RHEI_SYNC_INTERVL": "2",  # a near miss: warned about
        "AWS_REGION": "us-east-1",  # not ours: the library resolves AWS_* itself
    }
    options, warnings = environment_options(env, FIELDS, structured=["storage_options", "tables"])
    assert options == {
        "storage": "s3://bucket/lake",
        "sync_interval": "0.5",
        "storage_options": {"AWS_REGION": "eu-west-1"},
        "metrics_port": "9108",
    }
    assert warnings == ["ignoring RHEI_SYNC_INTERVL: not a configuration option (did you mean RHEI_SYNC_INTERVAL?)"]
    assert LakeConfig(**{k: v for k, v in options.items() if k != "metrics_port"}).sync_interval == 0.5


def test_bad_json_in_the_environment_is_named_without_echoing_the_value():
    with pytest.raises(ConfigError) as caught:
        environment_options(
            {"RHEI_STORAGE_OPTIONS": '{"AWS_SECRET_ACCESS_KEY": hunter2}'}, FIELDS, structured=["storage_options"]
        )
    assert "RHEI_STORAGE_OPTIONS: expected JSON" in str(caught.value) and "hunter2" not in str(caught.value)


def test_the_serve_table_is_kept_apart_from_the_lake_options(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[lake]\nstorage = "./lake"\n[serve]\nmetrics_port = 9108\n')
    file = read_config_file(path)
    assert file.lake == {"storage": "./lake"} and file.serve == {"metrics_port": 9108}


def test_file_then_environment_then_flags(tmp_path):
    (tmp_path / "c.toml").write_text('storage = "./from-file"\n')
    assert "from-file" in rh("info", "--config", "c.toml", cwd=tmp_path).stdout
    from_env = rh("info", "--config", "c.toml", cwd=tmp_path, env={"RHEI_STORAGE": "./from-env"})
    assert "from-env" in from_env.stdout and "from-file" not in from_env.stdout
    from_flag = rh(
        "info", "--config", "c.toml", "--storage", "./from-flag", cwd=tmp_path, env={"RHEI_STORAGE": "./from-env"}
    )
    assert "from-flag" in from_flag.stdout and "from-env" not in from_flag.stdout


def test_environment_errors_name_the_variable_and_never_a_secret(tmp_path):
    line = one_error_line(rh("info", "--storage", "./lake", cwd=tmp_path, env={"RHEI_BATCH_SIZE": "-3"}))
    assert "batch_size" in line and "RHEI_BATCH_SIZE" in line
    warned = rh("info", "--storage", "./lake", cwd=tmp_path, env={"RHEI_STORGE": "./x"})
    assert warned.returncode == 0 and "did you mean RHEI_STORAGE?" in warned.stderr
    secret = rh(
        "info",
        "--storage",
        "s3://bucket/lake",
        cwd=tmp_path,
        env={
            "RHEI_STORAGE_OPTIONS": '{"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "AKIDSECRET", '
            '"AWS_SECRET_ACCESS_KEY": "hunter2", "AWS_REGION": "us-east-1", '
            '"AWS_ALLOW_HTTP": "true"}'
        },
        timeout=180,
    )
    line = one_error_line(secret)
    assert "hunter2" not in secret.stderr + secret.stdout and "AKIDSECRET" not in secret.stderr + secret.stdout
    assert "s3://bucket" in line


def test_the_config_file_is_found_as_rhei_config_or_in_the_working_folder(tmp_path):
    from rhei_lake.config_file import find_config_file

    assert find_config_file({}, tmp_path) is None
    (tmp_path / "rhei.toml").write_text('storage = "./here"\n')
    (tmp_path / "other.toml").write_text('storage = "./there"\n')
    assert find_config_file({}, tmp_path) == tmp_path / "rhei.toml"
    assert find_config_file({"RHEI_CONFIG": str(tmp_path / "other.toml")}, tmp_path) == tmp_path / "other.toml"
    assert find_config_file({"RHEI_CONFIG": ""}, tmp_path) is None
    with pytest.raises(ConfigError, match="RHEI_CONFIG='nope.toml': no such configuration file"):
        find_config_file({"RHEI_CONFIG": "nope.toml"}, tmp_path)

    assert "here" in rh("info", cwd=tmp_path).stdout  # as Litestream finds its file
    assert "there" in rh("info", cwd=tmp_path, env={"RHEI_CONFIG": "other.toml"}).stdout
    assert "no such configuration file" in one_error_line(rh("info", cwd=tmp_path, env={"RHEI_CONFIG": "x.toml"}))


def test_an_invalid_environment_value_is_refused_even_by_a_command_that_ignores_it(tmp_path):
    """rh query never runs the sync loop, yet RHEI_SYNC_INTERVAL=abc is a mistake worth knowing about."""
    for var, value in (("RHEI_SYNC_INTERVAL", "abc"), ("RHEI_METRICS_PORT", "many"), ("RHEI_AUTO_REGISTER", "maybe")):
        line = one_error_line(rh("query", "--storage", "./lake", "SELECT 1", cwd=tmp_path, env={var: value}))
        assert var in line, line
