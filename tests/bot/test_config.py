from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings


def test_defaults_run_the_local_demo() -> None:
    settings = load_settings(_env_file=None)
    assert settings.platform.value == "local"
    assert settings.backend.name == "demo"
    assert settings.database.url.startswith("sqlite://")
    assert settings.local.host == "127.0.0.1"


def test_environment_overrides_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBOT_WORKER__CONCURRENCY", "4")
    monkeypatch.setenv("GENBOT_LIMITS__SIZES", '["256x256"]')
    monkeypatch.setenv("GENBOT_LIMITS__DEFAULT_SIZE", "256x256")
    settings = load_settings(_env_file=None)
    assert settings.worker.concurrency == 4
    assert settings.limits.sizes == ["256x256"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GENBOT_WORKER__CONCURRENCY", "many"),
        ("GENBOT_WORKER__CONCURRENCY", "0"),
        ("GENBOT_PLATFORM", "irc"),
        ("GENBOT_LIMITS__SIZES", '["big"]'),
        ("GENBOT_LOCAL__PORT", "70000"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert variable in str(caught.value)


def test_the_cli_exits_2_with_the_variable_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    monkeypatch.setenv("GENBOT_WORKER__JOB_TIMEOUT_S", "-1")
    assert main(["migrate"]) == 2
    assert "GENBOT_WORKER__JOB_TIMEOUT_S" in capsys.readouterr().err
