"""docs/configuration.md and docs/metrics.md cannot drift from the code: they equal what
scripts/gen_reference_docs.py renders from the schemas and the metric catalog, every setting has a
meaning, and the catalog names exactly the `atropos/*` metrics the source logs (found by reading
every string and f-string of recipe/atropos/, module-level name constants resolved)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from recipe.atropos.reference.markdown import REFERENCE_DOCS
from recipe.atropos.reference.metric_catalog import METRICS, documented, name_pattern
from recipe.atropos.reference.settings_catalog import sections

ROOT = Path(__file__).resolve().parents[4]


def test_the_reference_docs_are_what_the_code_renders():
    for relative, render in REFERENCE_DOCS.items():
        assert (ROOT / relative).read_text() == render() + "\n", f"run python scripts/gen_reference_docs.py ({relative})"
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_reference_docs.py"), "--check"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


def test_every_setting_says_what_it_does():
    undocumented = [s.key for section in sections() for s in section.settings if len(s.meaning) < 10]
    assert not undocumented


def _text(node: ast.AST, names: dict[str, str]) -> str | None:
    """A string or f-string as text: holes become "*", names assigned a string in the module resolved."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else
                       names.get(getattr(part.value, "id", None), "*") for part in node.values)
    return None


def logged_metric_names() -> set[str]:
    """Every `atropos/...` string of the recipe's source (tests, examples and this catalog aside)."""
    names = set()
    for path in (ROOT / "recipe" / "atropos").rglob("*.py"):
        if {"tests", "examples", "reference"} & set(path.relative_to(ROOT / "recipe" / "atropos").parts):
            continue
        tree = ast.parse(path.read_text())
        assigned: dict[str, str] = {}
        for _ in range(2):  # a name built from another (by_env from by_reason)
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    text = _text(node.value, assigned)
                    if text is not None:
                        assigned[node.targets[0].id] = text
        for node in ast.walk(tree):
            text = _text(node, assigned)
            if text is not None and re.fullmatch(r"atropos/[a-z_*/]+", text) and not text.endswith("/"):
                names.add(text)
    return names


def test_the_metric_catalog_names_exactly_what_the_code_logs():
    logged = logged_metric_names()
    assert len(logged) > 40
    undocumented = [name for name in logged if documented(name.replace("*", "x")) is None]
    assert not undocumented, f"add these to recipe/atropos/reference/metric_catalog.py: {sorted(undocumented)}"
    as_patterns = [re.compile(name_pattern(doc.name)) for doc in METRICS]
    never_logged = [doc.name for doc, regex in zip(METRICS, as_patterns)
                    if not any(regex.fullmatch(name.replace("*", "x")) for name in logged)]
    assert not never_logged, f"the catalog names metrics the code no longer logs: {never_logged}"
    assert all(doc.meaning and doc.unit and doc.healthy for doc in METRICS)
