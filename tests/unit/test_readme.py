"""The README's configuration table lists every setting with its real default."""

from pathlib import Path

from streamapp.settings import documented

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    for name, default, _ in documented():
        shown = f"`{default}`" if default else "(empty)"
        assert f"| `{name}` | {shown} |" in README, name


def test_the_readme_gives_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README
