"""scripts/check_docs.py: the README and docs name only what exists (it passes on the repository),
and it catches each kind of drift in a page written to hold one of each."""

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
spec = importlib.util.spec_from_file_location("check_docs", ROOT / "scripts" / "check_docs.py")
check_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_docs)


def test_the_readme_and_docs_name_only_what_exists():
    assert check_docs.check(check_docs.docs_files()) == []


def test_each_kind_of_drift_is_named(tmp_path):
    # Written outside the repository (beside copies of the pages it links to), so an interrupted run
    # leaves nothing in docs/ for the other test to trip on.
    (tmp_path / "docs").mkdir()
    for name in ("configuration.md", "metrics.md"):
        shutil.copy(ROOT / "docs" / name, tmp_path / "docs" / name)
    page = tmp_path / "docs" / "_drift_probe.md"
    page.write_text(
        "# Probe\n"
        "[gone](gone.md) [heading](configuration.md#no-such-heading) [fine](metrics.md) [self](#probe)\n"
        "`recipe/atropos/no_such_module.py` and `recipe/atropos/launcher/config.py`\n"
        "`python -m recipe.atropos.no_such_entry` and `python -m recipe.atropos.launcher`\n"
        "trainer.atropos.no_such_key and trainer.atropos.max_policy_lag\n"
        "`atropos/no_such_metric`, `atropos/policy_lag_mean|max`, `atropos/sync_check/*`, `atropos/env_share/<env>`\n"
        "```bash\nscripts/no_such_script.sh --help\n```\n")
    problems = check_docs.check([page])
    assert [problem.split(": ", 1)[1] for problem in problems] == [
        "link to gone.md: no such file",
        "link to configuration.md#no-such-heading: no heading #no-such-heading",
        "names recipe/atropos/no_such_module.py: no such file",
        "python -m recipe.atropos.no_such_entry: no such module",
        "names setting trainer.atropos.no_such_key: not in docs/configuration.md",
        "names metric atropos/no_such_metric: not in docs/metrics.md",
        "names scripts/no_such_script.sh: no such file",
    ]
