"""Every setting a user can give: `trainer.atropos.*`, `trainer.atropos_inference.*` and the
launcher's YAML, each with its type, default and meaning, read from the code's own schemas.

Types and fields come from the dataclasses the settings are checked against; defaults from the
YAML defaults files (recipe settings) or the dataclasses (launcher); meanings from the comment
directly above each key or field, or at the end of its line. docs/configuration.md is generated
from this (scripts/gen_reference_docs.py).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
from pathlib import Path
from typing import Any

import yaml

from recipe.atropos.data.client_config import DEFAULTS_FILE as CLIENT_DEFAULTS
from recipe.atropos.data.client_config import AtroposClientConfig
from recipe.atropos.launcher.config import ApiSpec, EnvSpec, LauncherConfig, TrainerSpec
from recipe.atropos.policy_server.settings import DEFAULTS_FILE as INFERENCE_DEFAULTS
from recipe.atropos.policy_server.settings import InferenceConfig


@dataclasses.dataclass(frozen=True)
class SettingDoc:
    key: str
    type: str
    default: str
    meaning: str


@dataclasses.dataclass(frozen=True)
class SettingsSection:
    title: str
    where: str  # where a user sets them
    settings: list[SettingDoc]


def _comments_by_line(text: str) -> dict[int, str]:
    """{line number: the comment on it} (1-based), found by Python's or a plain '#' scan."""
    comments = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT:
                comments[token.start[0]] = token.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return comments


def _meaning(lines: list[str], comments: dict[int, str], line: int) -> str:
    """The comment block directly above line `line` (no blank line between) and its trailing comment."""
    above = []
    previous = line - 1
    while previous >= 1 and lines[previous - 1].strip().startswith("#"):
        above.insert(0, comments.get(previous, ""))
        previous -= 1
    trailing = comments.get(line) if not lines[line - 1].strip().startswith("#") else None
    return " ".join(part for part in [*above, trailing] if part)


def _yaml_comments(path: Path) -> dict[str, str]:
    """Top-level key -> its meaning, from the YAML file's comments."""
    lines = path.read_text().splitlines()
    comments = {}
    for number, line in enumerate(lines, start=1):
        if line.strip().startswith("#"):
            comments[number] = line.strip().lstrip("#").strip()
        elif " #" in line:
            comments[number] = line.split(" #", 1)[1].strip()
    return {line.split(":", 1)[0].strip(): _meaning(lines, comments, number)
            for number, line in enumerate(lines, start=1)
            if line and not line[0].isspace() and not line.startswith("#") and ":" in line}


def _field_comments(cls: type) -> dict[str, str]:
    """Dataclass field -> its meaning, from the comments in the class's source."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    comments = _comments_by_line(source)
    names = {field.name for field in dataclasses.fields(cls)}
    found = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip().split(":", 1)[0]
        if line.startswith("    ") and not line.startswith("     ") and name in names and name not in found:
            found[name] = _meaning(lines, comments, number)
    return found


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and str(Path(value)).startswith(str(Path(__file__).parents[1])):
        return str(Path(value).relative_to(Path(__file__).parents[3]))  # a path inside the repository
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _dataclass_default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return _shown(field.default)
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return _shown(field.default_factory())  # type: ignore[misc]
    return "required"


def _recipe_section(title: str, prefix: str, schema: type, defaults_file: Path) -> SettingsSection:
    defaults = yaml.safe_load(defaults_file.read_text())
    meanings = _yaml_comments(defaults_file)
    settings = [SettingDoc(f"{prefix}.{field.name}", str(field.type), _shown(defaults.get(field.name)),
                           meanings.get(field.name, "")) for field in dataclasses.fields(schema)]
    where = f"Hydra overrides of the trainer (`{prefix}.<key>=<value>`), or the launcher's `trainer.overrides`"
    return SettingsSection(title, where, settings)


def _launcher_settings(prefix: str, schema: type) -> list[SettingDoc]:
    meanings = _field_comments(schema)
    return [SettingDoc(f"{prefix}{field.name}", str(field.type), _dataclass_default(field), meanings.get(field.name, ""))
            for field in dataclasses.fields(schema)]


def sections() -> list[SettingsSection]:
    launcher = [*_launcher_settings("", LauncherConfig), *_launcher_settings("api.", ApiSpec),
                *_launcher_settings("trainer.", TrainerSpec), *_launcher_settings("environments[].", EnvSpec)]
    return [
        _recipe_section("The Atropos client and the batches it trains", "trainer.atropos", AtroposClientConfig,
                        CLIENT_DEFAULTS),
        _recipe_section("The policy server environments call", "trainer.atropos_inference", InferenceConfig,
                        INFERENCE_DEFAULTS),
        SettingsSection("The launcher", "the launcher's YAML (`--config`), or `--set key=value`", launcher),
    ]
