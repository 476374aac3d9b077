from pathlib import Path

from app import settings_docs
from app.settings import SETTINGS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented_with_its_default():
    text = DOCS.read_text()
    missing = [s.env for s in SETTINGS.values() if f"| `{s.env}` | `{s.default}` |" not in text]
    assert missing == []


def test_configuration_md_is_generated_from_the_settings():
    text = DOCS.read_text()
    assert text == settings_docs.render(text), "docs/configuration.md is not current: run make docs"


def test_the_generator_keeps_the_prose_and_replaces_the_table():
    stale = f"intro\n\n{settings_docs.BEGIN}\n| `GONE` | `1` | old |\n{settings_docs.END}\n\nnotes\n"
    text = settings_docs.render(stale)
    assert text.startswith(f"intro\n\n{settings_docs.BEGIN}\n\n| Variable |") and text.endswith(f"\n\n{settings_docs.END}\n\nnotes\n")
    assert "GONE" not in text and all(f"| `{env}` |" in text for env in SETTINGS)
