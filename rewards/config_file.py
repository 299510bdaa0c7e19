"""Reading TOML or YAML configuration files (suites, the reward server, the trainer)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigFileError(ValueError):
    """A configuration file that cannot be read or is not a table at the top."""


def read_config_file(path: str | Path, what: str = "config") -> Mapping[str, Any]:
    """The top-level table of a `.toml`, `.yaml` or `.yml` file."""
    path = Path(path)
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigFileError(f"{path}: a {what} file is .toml, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read the {what} file: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigFileError(f"{path}: expected a table/mapping at the top level")
    return data
