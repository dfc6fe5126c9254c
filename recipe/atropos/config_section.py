"""Defaults of a recipe config section from its YAML, merged with the user's overrides."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def merged_section(defaults_file: Path, overrides: Mapping[str, Any] | DictConfig | None, section: str,
                   known: Iterable[str]) -> dict[str, Any]:
    """The YAML's values updated with `overrides`; a key the section does not know raises ValueError."""
    merged: dict[str, Any] = OmegaConf.to_container(OmegaConf.load(defaults_file), resolve=True)  # type: ignore[assignment]
    if overrides is not None:
        if isinstance(overrides, DictConfig):
            overrides = OmegaConf.to_container(overrides, resolve=True)  # type: ignore[assignment]
        known = set(known)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"{section}: unknown keys {unknown}; known keys are {sorted(known)}")
        merged.update(overrides)
    return merged
