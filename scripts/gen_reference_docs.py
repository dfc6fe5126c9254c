"""Write docs/configuration.md and docs/metrics.md from the code (recipe/atropos/reference/).

    .venv/bin/python scripts/gen_reference_docs.py          write them
    .venv/bin/python scripts/gen_reference_docs.py --check  exit 1 naming each file that differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipe.atropos.reference.markdown import REFERENCE_DOCS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for relative, render in REFERENCE_DOCS.items():
        path, text = ROOT / relative, render() + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(relative)
        else:
            path.write_text(text)
            print(f"wrote {relative}")
    for relative in stale:
        print(f"{relative} differs from the code: run python scripts/gen_reference_docs.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
