"""The README's guarantee table and scripts/mutants.toml say the same: every row names the
mutants that break it, every mutant belongs to a row, and every test a mutant cites exists."""

from __future__ import annotations

import ast
import re
import tomllib

from tests.conftest import ROOT


def readme_rows() -> dict[str, list[str]]:
    """Row name -> the mutant ids its last cell names."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| guarantee | how | tests | mutants") : text.index("## Layout")]
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\| \*\*(.+?)\*\* \|", line)
        if match:
            rows[match.group(1)] = re.findall(
                r"`([a-z0-9-]+)`", line.rstrip(" |").rsplit("|", 1)[1]
            )
    return rows


def test_every_guarantee_has_a_mutant_and_every_mutant_a_guarantee():
    mutants = tomllib.loads((ROOT / "scripts" / "mutants.toml").read_text())["mutant"]
    rows = readme_rows()
    assert len(rows) >= 20
    assert [name for name, ids in rows.items() if not ids] == []
    by_row: dict[str, list[str]] = {}
    for m in mutants:
        assert m["guarantee"] in rows, f"mutant {m['id']}: no README row {m['guarantee']!r}"
        by_row.setdefault(m["guarantee"], []).append(m["id"])
    assert {name: sorted(ids) for name, ids in rows.items()} == {
        name: sorted(by_row.get(name, [])) for name in rows
    }


def test_every_test_a_mutant_cites_exists():
    mutants = tomllib.loads((ROOT / "scripts" / "mutants.toml").read_text())["mutant"]
    for m in mutants:
        assert m["tests"], m["id"]
        for node in m["tests"]:
            path, _, name = node.partition("::")
            tree = ast.parse((ROOT / path).read_text())
            defined = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
            assert name.split("[")[0] in defined, f"mutant {m['id']}: no test {node}"


def test_every_test_the_readme_names_exists():
    """A renamed or removed test leaves no row citing it: every ``test_...`` name in the
    README's guarantee table (``test_id`` is a field) is a test function under tests/."""
    defined = {
        f.name
        for path in (ROOT / "tests").rglob("*.py")
        for f in ast.walk(ast.parse(path.read_text()))
        if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")
    }
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| guarantee | how | tests | mutants") : text.index("## Layout")]
    named = set(re.findall(r"\btest_[a-z0-9_]+\b", table)) - {"test_id"}
    named -= {n for n in named if (ROOT / "tests" / f"{n}.py").exists()}  # a file, not a test
    assert sorted(named - defined) == []
