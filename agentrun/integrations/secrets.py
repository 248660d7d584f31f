"""The secret store: `secrets.NAME` in expressions, from the config, the environment or a file.

Config (the server/run config file):
  secrets:
    plain: abc                                  # a literal (keep such files private)
    token: {env: SERVICE_TOKEN}                 # from an environment variable (an error when unset)
    maybe: {env: OPTIONAL_TOKEN, optional: true}   # left out when unset
    db_password: {file: /run/secrets/db_password}  # a file's content, trailing newline dropped
  secrets_file: /run/secrets/agentrun.yaml      # a YAML or JSON mapping NAME: value ($AGENTRUN_SECRETS_FILE too)
and every environment variable AGENTRUN_SECRET_NAME (as `secrets.NAME`, and `secrets.name`).

Later sources win: the secrets file, then AGENTRUN_SECRET_* variables, then `secrets:`.
`load_secrets(config)` returns the mapping for `EngineConfig(secrets=...)`: the engine then
redacts every value from what it stores and publishes. `redact_logging(values)` scrubs the
values from log records as well.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from agentrun.engine.redact import Redactor

DEFAULT_PREFIX = "AGENTRUN_SECRET_"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class SecretsError(ValueError):
    """The secrets section or the secrets file is invalid."""


def read_secrets_file(path: str | os.PathLike[str]) -> dict[str, str]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SecretsError(f"secrets file {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        # Never echo the parser's message: it quotes the file, secrets and all.
        raise SecretsError(
            f"secrets file {p}: not a valid {'JSON' if p.suffix == '.json' else 'YAML'} mapping"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SecretsError(f"secrets file {p}: expected a mapping of NAME: value")
    out = {}
    for key, value in data.items():
        if not isinstance(key, str) or not _NAME.match(key):
            raise SecretsError(f"secrets file {p}: {key!r} is not a valid secret name")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise SecretsError(f"secrets file {p}: secret {key!r} must be a string")
        out[key] = str(value)
    return out


def load_secrets(
    config: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The secrets the config names (see the module doc); ValueError (SecretsError) naming
    what is wrong, never quoting a value."""
    env = os.environ if env is None else env
    config = config or {}
    out: dict[str, str] = {}
    path = config.get("secrets_file") or env.get("AGENTRUN_SECRETS_FILE")
    if path:
        out.update(read_secrets_file(path))
    for key, value in env.items():
        if key.startswith(DEFAULT_PREFIX) and len(key) > len(DEFAULT_PREFIX):
            name = key[len(DEFAULT_PREFIX) :]
            if _NAME.match(name):
                out[name] = value
                out.setdefault(name.lower(), value)
    section = config.get("secrets") or {}
    if not isinstance(section, Mapping):
        raise SecretsError(
            "secrets: expected a mapping of names to values, {env: VARIABLE} or {file: PATH}"
        )
    for name, value in section.items():
        name = str(name)
        if not _NAME.match(name):
            raise SecretsError(f"secrets.{name}: not a valid secret name")
        if isinstance(value, Mapping):
            if "env" in value and set(value) <= {"env", "optional"}:
                variable = str(value["env"])
                if variable in env:
                    out[name] = env[variable]
                elif not value.get("optional"):
                    raise SecretsError(
                        f"secrets.{name}: environment variable {variable} is not set"
                    )
            elif set(value) == {"file"}:
                try:
                    out[name] = (
                        Path(str(value["file"])).read_text().removesuffix("\n").removesuffix("\r")
                    )
                except OSError as exc:
                    raise SecretsError(
                        f"secrets.{name}: cannot read {value['file']}: {exc.strerror or exc}"
                    ) from None
            else:
                raise SecretsError(
                    f"secrets.{name}: expected a string, {{env: VARIABLE}} or {{file: PATH}}"
                )
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            out[name] = str(value)
        else:
            raise SecretsError(
                f"secrets.{name}: expected a string, {{env: VARIABLE}} or {{file: PATH}}"
            )
    return out


# ----------------------------------------------------------------------------- logging
_lock = threading.Lock()
_values: set[str] = set()
_installed = False


def redact_logging(values: Iterable[str]) -> None:
    """Scrubs these values from every log record made from now on (message, arguments and
    traceback text), whichever logger makes it. Adds to the values given before."""
    global _installed
    with _lock:
        _values.update(v for v in values if isinstance(v, str))
        redactor = Redactor(_values)
        if _installed:
            _state["redactor"] = redactor
            return
        _state["redactor"] = redactor
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            r: Redactor = _state["redactor"]
            if not r:
                return record
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            clean = r.text(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
                record.exc_text = r.text(logging.Formatter().formatException(record.exc_info))
            elif record.exc_text:
                record.exc_text = r.text(record.exc_text)
            if record.stack_info:
                record.stack_info = r.text(record.stack_info)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


_state: dict[str, Any] = {"redactor": Redactor(())}
