"""Refuses to patch a verl other than the one in REQUIRED_VERL.txt."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

REQUIRED_FILE = Path(__file__).with_name("REQUIRED_VERL.txt")


def required_verl_version() -> str:
    """The pinned version, read from REQUIRED_VERL.txt (`verl==X.Y.Z`)."""
    text = REQUIRED_FILE.read_text().strip()
    return text.split("==", 1)[1].strip() if "==" in text else text


def check_verl_version(installed: str | None = None) -> None:
    """Raise ImportError (and log it at ERROR) when the installed verl is not the pinned one."""
    installed = installed or importlib.metadata.version("verl")
    required = required_verl_version()
    if installed != required:
        message = (
            f"verl_patches: installed verl {installed} but the Atropos recipe's patches are pinned to verl "
            f"{required} (REQUIRED_VERL.txt). Install verl=={required}; the patches are NOT applied."
        )
        logger.error(message)
        raise ImportError(message)
