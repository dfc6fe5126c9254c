"""Typed settings through `OmegaConf.structured`: a dataclass schema filled from mappings (a YAML's
defaults, then the user's overrides); an unknown key, a value of the wrong type or a missing one
raises an error naming `<where>.<key>`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, ValidationError

T = TypeVar("T")


def typed_config(schema: type[T], *sources: Mapping[str, Any] | DictConfig | None, where: str,
                 error: type[ValueError] = ValueError) -> T:
    """An instance of the dataclass `schema` from `sources` merged in order (None: skipped)."""
    typed = OmegaConf.structured(schema)
    _writable(typed)
    try:
        # A section of a composed Hydra config is resolved first: its interpolations point outside it.
        resolved = [OmegaConf.to_container(source, resolve=True) if isinstance(source, DictConfig) else source
                    for source in sources if source is not None]
        merged = OmegaConf.merge(typed, *resolved)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except (ConfigKeyError, ConfigAttributeError) as exc:
        known = sorted(field.name for field in dataclasses.fields(schema))  # type: ignore[arg-type]
        raise error(f"{where}: unknown keys ['{exc.key}']; known keys are {known}") from None
    except MissingMandatoryValue as exc:
        raise error(f"{where}.{exc.full_key}: missing (no default)") from None
    except ValidationError as exc:
        raise error(f"{where}.{exc.full_key}: {str(exc.msg).splitlines()[0]}") from None


def _writable(node: DictConfig | ListConfig) -> None:
    """Frozen dataclasses make read-only nodes (nested ones too); the merge must write them. The
    objects `to_object` makes are still frozen."""
    OmegaConf.set_readonly(node, False)
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)):
            _writable(child)


def load_section(schema: type[T], defaults_file: Path, overrides: Mapping[str, Any] | DictConfig | None,
                 section: str) -> T:
    """A recipe config section: `defaults_file`'s values, then `overrides`; errors name `section.key`."""
    return typed_config(schema, OmegaConf.load(defaults_file), overrides, where=section)
