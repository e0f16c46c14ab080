"""The documentation keeps up with the settings: every setting is in .env.example and the README."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from bot.config import ENV_NESTED, ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def env_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += [f"{ENV_PREFIX}{name}{ENV_NESTED}{sub}".upper() for sub in annotation.model_fields]
        else:
            names.append(f"{ENV_PREFIX}{name}".upper())
    return names


def test_every_setting_is_in_env_example_and_readme() -> None:
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in env_names():
        assert f"\n{name}=" in example, f"{name} missing from .env.example"
        assert name in readme, f"{name} missing from README.md"


def test_env_example_values_are_the_defaults(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text())
    assert load_settings(_env_file=env) == load_settings(_env_file=None)
