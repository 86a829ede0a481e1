"""Local paths, ``s3://`` and ``gs://`` URIs as pyarrow filesystems.

S3 settings come from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION, AWS_ENDPOINT_URL) and can be overridden by
``storage_options`` (keys: access_key, secret_key, session_token, region, endpoint_url), so
S3-compatible stores such as MinIO work. Secrets are never put into messages or logs.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import pyarrow.fs as pafs

from ..data import DataError

S3_OPTION_KEYS = ("access_key", "secret_key", "session_token", "region", "endpoint_url")


def is_remote(uri: str) -> bool:
    return urlparse(str(uri)).scheme in ("s3", "gs", "gcs")


def _s3(options: tuple) -> pafs.S3FileSystem:
    opts = with_env(dict(options))
    endpoint = opts.get("endpoint_url")
    kwargs = {key: opts.get(key) for key in ("access_key", "secret_key", "session_token")}
    kwargs["region"] = opts.get("region") or "us-east-1"
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


@functools.lru_cache(maxsize=8)
def _filesystem(scheme: str, options: tuple) -> pafs.FileSystem:
    if scheme == "s3":
        return _s3(options)
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem()
    return pafs.LocalFileSystem()


def with_env(options: dict) -> dict:
    """Options completed from this process's AWS_* variables, so Ray tasks and workers (whose
    environment is the cluster's, not the driver's) reach the same store with the same settings."""
    env = os.environ
    found = {"access_key": env.get("AWS_ACCESS_KEY_ID"), "secret_key": env.get("AWS_SECRET_ACCESS_KEY"),
             "session_token": env.get("AWS_SESSION_TOKEN"),
             "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
             "endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")}
    return {**{k: v for k, v in found.items() if v}, **options}


def parse_options(text: Optional[str]) -> dict:
    """``--storage_options`` is a JSON object; unknown keys are named in the error."""
    if not text:
        return {}
    try:
        options = json.loads(text) if isinstance(text, str) else dict(text)
    except json.JSONDecodeError as e:
        raise DataError(f"storage_options: not a JSON object ({e.msg})") from None
    unknown = sorted(set(options) - set(S3_OPTION_KEYS))
    if unknown:
        raise DataError(f"storage_options: unknown key(s) {unknown}; expected some of {list(S3_OPTION_KEYS)}")
    return options


def resolve(uri: str, options: Optional[dict] = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it. One filesystem per process and settings (not fork-shared)."""
    parsed = urlparse(str(uri))
    if parsed.scheme in ("s3", "gs", "gcs"):
        return _filesystem(parsed.scheme, tuple(sorted((options or {}).items()))), \
            (parsed.netloc + parsed.path).rstrip("/")
    return _filesystem("file", ()), str(Path(uri).resolve())


def ray_storage(uri: str, options: Optional[dict] = None) -> tuple[Optional[pafs.FileSystem], str]:
    """What Ray Train and Tune take as ``storage_filesystem`` and ``storage_path``: a filesystem and the
    path inside it for object storage (so our S3 settings apply), None and the path for a local folder."""
    return resolve(uri, options) if is_remote(uri) else (None, uri)


def access_denied(error: Exception) -> bool:
    """Whether an object-store error is a refusal of the credentials (pyarrow and botocore spell it
    in several ways)."""
    code = str(error).upper().replace("_", "")
    return any(w in code for w in ("ACCESSDENIED", "INVALIDACCESSKEYID", "SIGNATUREDOESNOTMATCH", "403",
                                   "EXPIREDTOKEN", "NOCREDENTIALS"))


def missing_credentials_hint(uri: str) -> str:
    if urlparse(str(uri)).scheme == "s3" and not os.environ.get("AWS_ACCESS_KEY_ID"):
        return " (AWS_ACCESS_KEY_ID is not set, and no access_key in --storage_options)"
    return " (the credentials were refused: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or --storage_options)"
