from pathlib import Path

from app.settings import SETTINGS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented_with_its_default():
    text = DOCS.read_text()
    missing = [s.env for s in SETTINGS.values() if f"| `{s.env}` | `{s.default}` |" not in text]
    assert missing == []
