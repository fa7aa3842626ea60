"""The README's generated tables are current: they are rendered from the code that enforces them."""

from pathlib import Path

from retrieval.limits import limits_table

README = Path(__file__).resolve().parents[1] / "README.md"


def between(text: str, marker: str) -> str:
    start = text.index(f"<!-- {marker} -->\n") + len(f"<!-- {marker} -->\n")
    return text[start:text.index(f"<!-- /{marker} -->")].strip()


def test_the_limits_table_is_current():
    assert between(README.read_text(), "limits-table") == limits_table(), \
        "README.md's limits table is stale: paste retrieval.limits.limits_table() between its markers"
