"""The documentation keeps up with the settings: every setting is in .env.example and the README."""

from __future__ import annotations

from pathlib import Path

from bot.config import load_settings, setting_names

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_env_example_and_readme() -> None:
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in setting_names():
        assert f"\n{name}=" in example, f"{name} missing from .env.example"
        assert name in readme, f"{name} missing from README.md"


def test_env_example_values_are_the_defaults(tmp_path: Path) -> None:
    """...and names nothing that is not a setting (load_settings would refuse it)."""
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text())
    assert load_settings(_env_file=env) == load_settings(_env_file=None)
