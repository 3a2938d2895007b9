"""Load a server's settings: a TOML file, then environment overrides, validated by a pydantic model.

    config = load_toml_settings(Path("meta.toml"), MetaServerConfig, env_prefix="PEGASUS_KV_META__")

Environment overrides. A variable named `<prefix><KEY>` sets the top-level key `key`; nested tables
are reached with `__` between the names, in any case:

    PEGASUS_KV_META__PORT=34602                 ->  port = "34602"
    PEGASUS_KV_META__STORE__DATA_DIR=/data/meta ->  [store] data_dir = "/data/meta"

Values arrive as strings and the model converts them ("34602" -> 34602, "true" -> True; list fields
that accept it split "a,b" on commas). An override wins over the file. An unknown name is an error,
like an unknown key in the file (the models forbid extra keys), so a typo never goes unnoticed.

Relative paths in the model are resolved against the configuration file's directory: the model reads
it from the validation context key "base_dir" (see config.py).

Every failure (missing file, bad TOML, invalid value) is one InvalidArgumentError that names the file
and the offending keys: foreign exceptions are translated here, once.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from pegasus_kv.core.errors import InvalidArgumentError

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

MAX_CONFIG_FILE_BYTES = 1024 * 1024
MAX_NESTING = 8


def load_toml_settings(
    path: Path,
    model: type[ModelT],
    *,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
) -> ModelT:
    """Read `path`, apply the overrides found in `environ` (os.environ by default), validate."""
    data = read_toml(path)
    apply_env_overrides(data, env_prefix, os.environ if environ is None else environ)
    return validate_settings(data, model, base_dir=path.resolve().parent, source=str(path))


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read configuration file {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        raise InvalidArgumentError(f"configuration file {path} is larger than {MAX_CONFIG_FILE_BYTES} bytes")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(f"configuration file {path} is not UTF-8: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgumentError(f"configuration file {path} is not valid TOML: {exc}") from exc


def apply_env_overrides(data: dict[str, Any], env_prefix: str, environ: Mapping[str, str]) -> None:
    """Set `data[a][b] = value` for every `<prefix>A__B=value` in environ (in sorted name order)."""
    prefix = env_prefix.upper()
    for name in sorted(environ):
        if not name.upper().startswith(prefix):
            continue
        keys = [part.lower() for part in name[len(prefix) :].split("__")]
        if not all(keys) or len(keys) > MAX_NESTING:
            raise InvalidArgumentError(
                f"environment variable {name}: expected {prefix}KEY or {prefix}TABLE__KEY"
            )
        table = data
        for depth, key in enumerate(keys[:-1]):
            child = table.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise InvalidArgumentError(f"environment variable {name}: {where} is a value, not a table")
            table = child
        table[keys[-1]] = environ[name]


def validate_settings(data: Mapping[str, Any], model: type[ModelT], *, base_dir: Path, source: str) -> ModelT:
    try:
        return model.model_validate(data, context={"base_dir": base_dir})
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise InvalidArgumentError(f"invalid configuration {source}: {problems}") from exc
