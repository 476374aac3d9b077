"""Write the table of settings in docs/configuration.md from `app.settings`: `make docs`.

Only the region between the two markers is generated; the prose around it is
written by hand. `tests.unit.test_docs` fails when the file is not current.
"""

from __future__ import annotations

from pathlib import Path

from app.settings import SETTINGS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN = "<!-- settings:begin: generated from app/settings.py by `make docs`; edit the settings there -->"
END = "<!-- settings:end -->"


def table() -> str:
    """One row per setting, in the order they are declared."""
    rows = [f"| `{s.env}` | `{s.default}` | {_cell(s.help)} |" for s in SETTINGS.values()]
    return "\n".join(["| Variable | Default | Meaning |", "|---|---|---|", *rows])


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(text: str) -> str:
    """`text` with the region between BEGIN and END replaced by the current table."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{BEGIN!r} ... {END!r} not found in order")
    return f"{text[:start + len(BEGIN)]}\n\n{table()}\n\n{text[end:]}"


def main() -> None:
    text = DOCS.read_text()
    updated = render(text)
    if updated != text:
        DOCS.write_text(updated)
    print(f"{DOCS}: {'updated' if updated != text else 'already current'}")


if __name__ == "__main__":
    main()
