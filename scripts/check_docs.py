"""Check that what README.md and docs/*.md name exists: relative links (and their #anchors), files
named in backticks, `python -m` modules of this repository, `trainer.atropos.*` and
`trainer.atropos_inference.*` settings, and `atropos/*` metrics.

    .venv/bin/python scripts/check_docs.py    exit 1, naming each problem by file and line
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipe.atropos.reference.metric_catalog import METRICS, documented  # noqa: E402
from recipe.atropos.reference.settings_catalog import sections  # noqa: E402

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```")
MODULE = re.compile(r"python -m ((?:recipe|verl_patches)(?:\.\w+)+)")
SETTING = re.compile(r"\btrainer\.atropos(?:_inference)?\.[a-z_]+")
METRIC = re.compile(r"(?<![\w/.-])atropos/[a-z_/<>|*]+[a-z_>*]")
# A file path in backticks: a folder of the repository, then a file with one of these endings.
FILE = re.compile(r"^(?:\.\./)?(?:[\w.-]+/)+[\w.-]+\.(?:py|sh|yaml|md|txt|toml|png)$")
RUN_OUTPUTS = ("outputs/", "checkpoints/", "/tmp/", "~", "$", "<", "my_")
# Slugs of headings, as GitHub makes them.
SLUG_DROP = re.compile(r"[^\w\- ]")


def docs_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    return SLUG_DROP.sub("", heading.strip().lower().replace("`", "")).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def repository_files() -> list[str]:
    skip = {".git", ".venv", ".venv-vllm", "outputs", "__pycache__", "checkpoints"}
    return [str(path.relative_to(ROOT)) for path in ROOT.rglob("*")
            if path.is_file() and not skip & set(path.relative_to(ROOT).parts)]


def _file_exists(name: str, doc: Path, files: list[str]) -> bool:
    """A path relative to the repository, to the doc, or the tail of a path in it (`config/cpu.yaml`)."""
    if (ROOT / name).exists() or (doc.parent / name).exists():
        return True
    tail = "/" + name.lstrip("./")
    return any(("/" + file).endswith(tail) for file in files)


def _metric_names(text: str) -> Iterable[str]:
    """`atropos/a_b|c` names two metrics, atropos/a_b and atropos/a_c; `<a|b>` is one placeholder."""
    for name in METRIC.findall(text):
        head, *alternatives = re.sub(r"<[^>]*>", "<x>", name).split("|")
        yield head
        stem = head.rsplit("_", 1)[0]
        yield from (f"{stem}_{alternative}" for alternative in alternatives)


def _metric_known(name: str) -> bool:
    """A metric of the catalog, or a family of them (`atropos/sync_check/*`, `atropos/policy_lag_*`)."""
    if documented(re.sub(r"<[a-z]+>", "x", name)) is not None:
        return True
    family = re.sub(r"<[a-z]+>", "*", name)
    return any(fnmatch.fnmatchcase(re.sub(r"<[a-z]+>", "x", doc.name), family) for doc in METRICS)


def check(paths: Iterable[Path]) -> list[str]:
    settings = {s.key for section in sections() for s in section.settings}
    files = repository_files()
    problems = []
    for doc in paths:
        in_fence = False
        for number, line in enumerate(doc.read_text().splitlines(), start=1):
            where = f"{doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc}:{number}"
            if FENCE.match(line):
                in_fence = not in_fence
                continue
            for target in LINK.findall(line):
                if target.startswith(("http://", "https://", "mailto:")):
                    continue
                name, _, anchor = target.partition("#")
                linked = (doc.parent / name) if name else doc
                if not linked.exists():
                    problems.append(f"{where}: link to {target}: no such file")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    problems.append(f"{where}: link to {target}: no heading #{anchor}")
            spans = [line] if in_fence else CODE.findall(line)
            for span in spans:
                for word in span.split():
                    word = word.strip(".,;:()[]'\"")
                    if FILE.match(word) and not word.startswith(RUN_OUTPUTS) and not _file_exists(word, doc, files):
                        problems.append(f"{where}: names {word}: no such file")
                for module in MODULE.findall(span):
                    if importlib.util.find_spec(module) is None:
                        problems.append(f"{where}: python -m {module}: no such module")
            for key in SETTING.findall(line):
                if key not in settings:
                    problems.append(f"{where}: names setting {key}: not in docs/configuration.md")
            for name in _metric_names(line):
                if not _metric_known(name):
                    problems.append(f"{where}: names metric {name}: not in docs/metrics.md")
    return problems


def main() -> int:
    problems = check(docs_files())
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"check_docs: {len(problems)} problem(s) in {len(docs_files())} files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
