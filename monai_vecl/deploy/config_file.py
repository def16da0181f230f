"""Reading the deployment YAML files (``deploy/config.yaml``, ``deploy/gateway.yaml``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def read_config(path: str | os.PathLike, section: str) -> dict[str, Any]:
    """The whole YAML document of ``path``; ``ValueError`` naming the file when ``section:`` is missing."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict) or section not in doc:
        raise ValueError(f"{path}: no '{section}:' section")
    return doc
