"""What is read back from storage: options files, sweep state, results, records of other processes.

A run's or a sweep's folder in a shared bucket may have been written by anyone who can write the bucket,
so its small files are read as data from outside: no more bytes than such a file can have, YAML without
anchors or aliases (core.schema.parse_yaml), JSON without unbounded nesting, and the expected kind of
value, or an error naming the file. What a caller then takes from them is its own decision (see
``run_options``)."""
from __future__ import annotations

import json
from typing import Any, Optional

from .config import FIELDS, PROCESS_KEYS
from .errors import DataError
from .schema import MAX_YAML_BYTES, parse_yaml
from .storage import Storage

MAX_JSON_BYTES = 1 << 20  # a record, a result or a pointer: kilobytes


def read_yaml(store: Storage, uri: str, kind: Optional[type] = dict, listed: Optional[str] = None) -> Any:
    """The YAML document at ``uri``, bounded and alias-free; ``kind``: what it must be (None: anything)."""
    return parse_yaml(store.read_bytes(uri, listed, limit=MAX_YAML_BYTES), uri, kind)


def read_json(store: Storage, uri: str, kind: Optional[type] = dict, listed: Optional[str] = None,
              limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON value at ``uri``, at most ``limit`` bytes; ``kind``: what it must be (None: anything)."""
    return parse_json(store.read_bytes(uri, listed, limit=limit), uri, kind)


def parse_json(data: bytes | str, source: str, kind: Optional[type] = dict) -> Any:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: thousands of nested brackets
        raise DataError(f"{source}: not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None
    if kind is not None and not isinstance(value, kind):
        raise DataError(f"{source}: holds a {type(value).__name__}, not a {kind.__name__}")
    return value


def run_options(saved: dict) -> dict:
    """From a stored run's options, what says what is trained and how (data, networks, objective, schedule,
    workers, devices, saves): the options of the process (``address``, ``checkpoints_dir`` ...) are
    left out, and so are names that are no option (an older or a foreign file's)."""
    return {k: v for k, v in saved.items() if k in FIELDS and k not in PROCESS_KEYS}
