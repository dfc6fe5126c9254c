"""Every runtime dependency declares the oldest release it works with: an unpinned one lets pip keep
an older copy already on a user's machine (tenacity's `wait_exponential_jitter` takes `multiplier=`
from 9.2.1 only: with 9.1.4, every client request raised TypeError)."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).parents[4] / "pyproject.toml"


def test_every_runtime_dependency_has_a_floor():
    dependencies = [Requirement(line) for line in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    without_floor = [str(req) for req in dependencies
                     if not any(spec.operator in (">=", "==", "~=", ">") for spec in req.specifier)]
    assert without_floor == []

