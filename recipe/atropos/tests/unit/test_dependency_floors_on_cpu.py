"""Every runtime dependency declares the oldest release it works with: an unpinned one lets pip keep
an older copy already on a user's machine (tenacity before 8.3 lacks `stop_before_delay`, and its
`wait_exponential_jitter` took `multiplier=` only from 9.2.1, so every client request raised). The
tenacity floor was checked by running the client's retry loop on 8.3.0, 8.5.0 and 9.0.0."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).parents[4] / "pyproject.toml"


def test_every_runtime_dependency_has_a_floor():
    dependencies = [Requirement(line) for line in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    without_floor = [str(req) for req in dependencies
                     if not any(spec.operator in (">=", "==", "~=", ">") for spec in req.specifier)]
    assert without_floor == []

