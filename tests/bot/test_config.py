from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.app import plugins_of
from bot.config import ENV_RESERVED, ConfigError, display_url, load_settings, setting_names


def test_defaults_run_the_local_demo() -> None:
    settings = load_settings(_env_file=None)
    assert settings.platform.value == "local"
    assert settings.backend.name == "demo"
    assert settings.database.url.startswith("sqlite://")
    assert settings.local.host == "127.0.0.1"


def test_environment_overrides_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBOT_WORKER__CONCURRENCY", "4")
    monkeypatch.setenv("GENBOT_LIMITS__PROMPT_MAX", "200")
    settings = load_settings(_env_file=None)
    assert settings.worker.concurrency == 4
    assert settings.limits.prompt_max == 200


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GENBOT_WORKER__CONCURRENCY", "many"),
        ("GENBOT_WORKER__CONCURRENCY", "0"),
        ("GENBOT_PLATFORM", "irc"),
        ("GENBOT_LIMITS__PROMPT_MAX", "0"),
        ("GENBOT_LOCAL__PORT", "70000"),
        ("GENBOT_LOG_LEVEL", "verbose"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert variable in str(caught.value)


def test_log_levels_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBOT_LOG_LEVEL", "debug")
    assert load_settings(_env_file=None).log_level == "DEBUG"


def test_the_cli_exits_2_with_the_variable_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    monkeypatch.setenv("GENBOT_WORKER__JOB_TIMEOUT_S", "-1")
    assert main(["migrate"]) == 2
    assert "GENBOT_WORKER__JOB_TIMEOUT_S" in capsys.readouterr().err


# -- names that are not settings ---------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment without any GENBOT_ variable of the caller's shell (the test prefix stays)."""
    for name in list(os.environ):
        if name.upper().startswith("GENBOT_") and not name.upper().startswith(ENV_RESERVED):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("GENBOT_DATABSE__URL", "GENBOT_DATABASE__URL"),
        ("GENBOT_DATABASE_URL", "GENBOT_DATABASE__URL"),  # one underscore is another name
        ("GENBOT_PLATFROM", "GENBOT_PLATFORM"),
        ("GENBOT_WORKER__CONCURENCY", "GENBOT_WORKER__CONCURRENCY"),
        ("GENBOT_REDIS", "GENBOT_REDIS__URL"),  # a whole section as JSON is not a setting
    ],
)
def test_a_name_that_is_not_a_setting_stops_with_the_closest_one(
    clean_env: pytest.MonkeyPatch, variable: str, closest: str
) -> None:
    clean_env.setenv(variable, "sqlite://elsewhere.sqlite3")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert str(caught.value) == f"{variable} is not a setting; did you mean {closest}?"


def test_a_name_like_no_setting_points_to_the_list(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GENBOT_FAULT_BATCH", "60")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert str(caught.value).startswith("GENBOT_FAULT_BATCH is not a setting (.env.example lists them all")


def test_unknown_names_in_the_env_file_are_refused_too(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# a comment\nOTHER_TOOL=1\nGENBOT_LOCAL__PROT=8001\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=env)
    assert (
        str(caught.value) == f"GENBOT_LOCAL__PROT in {env} is not a setting; did you mean GENBOT_LOCAL__PORT?"
    )


def test_the_test_prefix_and_other_programs_names_are_left_alone(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GENBOT_TEST_SOMETHING_NEW", "1")
    clean_env.setenv("NOT_GENBOT_PLATFROM", "1")
    clean_env.setenv("genbot_local__port", "8001")  # pydantic-settings reads names in any case
    assert load_settings(_env_file=None).local.port == 8001


def test_every_mistake_is_its_own_line_and_names_come_first(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GENBOT_PLATFROM", "slack")
    clean_env.setenv("GENBOT_DATABSE__URL", "x")
    clean_env.setenv("GENBOT_WORKER__CONCURRENCY", "many")  # reported once the names are right
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert str(caught.value).splitlines() == [
        "GENBOT_DATABSE__URL is not a setting; did you mean GENBOT_DATABASE__URL?",
        "GENBOT_PLATFROM is not a setting; did you mean GENBOT_PLATFORM?",
    ]


def test_setting_names_are_the_documented_ones() -> None:
    names = setting_names()
    assert names[:2] == ["GENBOT_PLATFORM", "GENBOT_LOG_LEVEL"]
    assert {"GENBOT_DATABASE__URL", "GENBOT_LOCAL__MEMBERS", "GENBOT_DISCORD__TOKEN"} <= set(names)
    assert not [name for name in names if name.startswith(ENV_RESERVED)]


# -- list values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "members"),
    [
        ("Alice,Bob", ["Alice", "Bob"]),
        (" Alice , Bob ,", ["Alice", "Bob"]),
        ("Alice", ["Alice"]),
        ('["Alice","Bob, Jr."]', ["Alice", "Bob, Jr."]),
    ],
)
def test_lists_take_commas_or_json(clean_env: pytest.MonkeyPatch, value: str, members: list[str]) -> None:
    clean_env.setenv("GENBOT_LOCAL__MEMBERS", value)
    assert load_settings(_env_file=None).local.members == members


def test_integer_lists_take_commas(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GENBOT_DISCORD__ADMIN_ROLE_IDS", "123, 456")
    clean_env.setenv("GENBOT_LOCAL__MEMBERS", "Ana, Bo")
    settings = load_settings(_env_file=None)
    assert settings.discord.admin_role_ids == [123, 456]
    assert settings.local.members == ["Ana", "Bo"]


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        (
            "GENBOT_LOCAL__MEMBERS",
            '["Alice", Bob]',
            "GENBOT_LOCAL__MEMBERS: not a JSON list (Expecting value at character 11); "
            'write ["a","b"] or a comma-separated list a,b',
        ),
        (
            "GENBOT_DISCORD__ADMIN_ROLE_IDS",
            "123,abc,def",
            "GENBOT_DISCORD__ADMIN_ROLE_IDS: item 2 ('abc'): Input should be a valid integer, "
            "unable to parse string as an integer",
        ),
    ],
)
def test_a_bad_list_is_one_line(clean_env: pytest.MonkeyPatch, variable: str, value: str, line: str) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert str(caught.value) == line


# -- URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://:secret@redis:6379/2",
        "rediss://user:secret@redis.example.com:6380/0",
        "redis://localhost",
        "redis://localhost:6379?db=3",
        "unix:///run/redis/redis.sock",
    ],
)
def test_redis_urls_arq_reads(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("GENBOT_REDIS__URL", url)
    assert load_settings(_env_file=None).redis.url == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("127.0.0.1:6379", "must be a redis://, rediss:// (TLS) or unix:// URL"),
        ("localhost", "must be a redis://, rediss:// (TLS) or unix:// URL"),
        ("http://redis:6379/0", "must be a redis://, rediss:// (TLS) or unix:// URL"),
        ("redis://redis:port/0", "has a host or port that cannot be read"),
        ("redis://redis:6379/zero", "the database after the host must be a number"),
        ("unix://", "unix:// needs the socket's path"),
    ],
)
def test_a_bad_redis_url_is_one_line(clean_env: pytest.MonkeyPatch, url: str, why: str) -> None:
    clean_env.setenv("GENBOT_REDIS__URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert str(caught.value).startswith(f"GENBOT_REDIS__URL: {why}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://data/genbot.sqlite3",
        "sqlite:///var/lib/genbot/genbot.sqlite3",
        "sqlite://:memory:",
        "postgres://genbot:secret@db:5432/genbot",
        "postgresql://genbot@db/genbot",
        "postgres://genbot:secret@db:5432/genbot?maxsize=20",
    ],
)
def test_database_urls_tortoise_reads(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("GENBOT_DATABASE__URL", url)
    assert load_settings(_env_file=None).database.url == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mysql://genbot:secret@db:3306/genbot", "genbot runs on SQLite or PostgreSQL"),
        ("data/genbot.sqlite3", "genbot runs on SQLite or PostgreSQL"),
        ("asyncpg://genbot@db/genbot", "genbot runs on SQLite or PostgreSQL"),
        ("sqlite://", "sqlite:// needs a file path"),
        ("postgres://genbot@db:pg/genbot", "the port must be a number"),
    ],
)
def test_a_bad_database_url_is_one_line_listing_what_works(
    clean_env: pytest.MonkeyPatch, url: str, why: str
) -> None:
    clean_env.setenv("GENBOT_DATABASE__URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert str(caught.value).startswith(f"GENBOT_DATABASE__URL: {why}")
    if why.startswith("genbot runs"):
        assert "sqlite://" in str(caught.value) and "postgres://" in str(caught.value)


def test_rules_between_settings_name_both_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GENBOT_WORKER__JOB_TIMEOUT_S", "60")
    clean_env.setenv("GENBOT_LOCAL__PORT", "70000")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert str(caught.value).splitlines() == [
        "GENBOT_WORKER__JOB_TIMEOUT_S (60) must be longer than GENBOT_WORKER__BACKEND_TIMEOUT_S (300)",
        "GENBOT_LOCAL__PORT: Input should be less than or equal to 65535",
    ]


def test_the_image_plugins_rules_name_its_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GENBOT_PLUGINS__IMAGINE__DEFAULT_SIZE", "64x64")
    with pytest.raises(ConfigError) as caught:
        plugins_of(load_settings(_env_file=None))
    assert str(caught.value) == (
        "GENBOT_PLUGINS__IMAGINE__DEFAULT_SIZE (64x64) must be one of GENBOT_PLUGINS__IMAGINE__SIZES "
        "(512x512,768x768,512x768,768x512) (plugin 'imagine')"
    )
    clean_env.setenv("GENBOT_PLUGINS__IMAGINE__DEFAULT_SIZE", "512x512")
    clean_env.setenv("GENBOT_PLUGINS__IMAGINE__SIZES", "big")
    with pytest.raises(ConfigError) as caught:
        plugins_of(load_settings(_env_file=None))
    assert str(caught.value) == "GENBOT_PLUGINS__IMAGINE__SIZES: 'big' is not WIDTHxHEIGHT (plugin 'imagine')"


def test_the_image_limits_old_names_are_read_for_one_release(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("GENBOT_LIMITS__SIZES", "256x256,1024x1024")
    clean_env.setenv("GENBOT_LIMITS__DEFAULT_SIZE", "256x256")
    clean_env.setenv("GENBOT_LIMITS__STEPS_MAX", "80")
    clean_env.setenv("GENBOT_PLUGINS__IMAGINE__STEPS_MAX", "30")  # the new name wins
    settings = load_settings(_env_file=None)
    [imagine] = [c for p in plugins_of(settings).loaded for c in p.plugin.commands if c.name == "imagine"]
    options = {o.name: o for o in imagine.options}
    assert options["size"].choices == ("256x256", "1024x1024")
    assert options["steps"].max == 30
    assert "GENBOT_LIMITS__SIZES is now GENBOT_PLUGINS__IMAGINE__SIZES" in caplog.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres://genbot:s3cret@db:5432/genbot?ssl=true", "postgres://genbot@db:5432/genbot"),
        ("redis://:s3cret@redis:6379/0", "redis://redis:6379/0"),
        ("sqlite://data/genbot.sqlite3", "sqlite://data/genbot.sqlite3"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert display_url(url) == shown
