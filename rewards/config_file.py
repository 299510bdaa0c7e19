"""Reading TOML or YAML configuration files (suites, the reward server, the trainer)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pydantic import ValidationError


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


def describe_validation_error(exc: ValidationError, root: str = "body") -> str:
    """pydantic's errors as one line naming each field: `samples[0].completion: Field required`."""

    def where(loc: Sequence[Any]) -> str:
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or root

    return "; ".join(f"{where(e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
