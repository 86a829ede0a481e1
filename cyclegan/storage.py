"""Where files live: local folders, ``s3://`` and ``gs://`` URIs, through pyarrow filesystems.

A run resolves its settings once into a :class:`Storage` and hands it down; every read, write and
listing of the project goes through it. S3 settings come from the standard AWS variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL) and can be overridden by ``storage_options`` (keys: access_key, secret_key,
session_token, region, endpoint_url), so S3-compatible stores such as MinIO work. Secrets are never
put into messages or logs.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlparse

import pyarrow.fs as pafs

from .data import DataError

S3_OPTION_KEYS = ("access_key", "secret_key", "session_token", "region", "endpoint_url")
REMOTE_SCHEMES = ("s3", "gs", "gcs")


def is_remote(uri: str) -> bool:
    return urlparse(str(uri)).scheme in REMOTE_SCHEMES


def parse_options(text: Union[str, dict, None]) -> dict:
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


def with_env(options: dict) -> dict:
    """Options completed from this process's AWS_* variables, so Ray tasks and workers (whose
    environment is the cluster's, not the driver's) reach the same store with the same settings."""
    env = os.environ
    found = {"access_key": env.get("AWS_ACCESS_KEY_ID"), "secret_key": env.get("AWS_SECRET_ACCESS_KEY"),
             "session_token": env.get("AWS_SESSION_TOKEN"),
             "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
             "endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")}
    return {**{k: v for k, v in found.items() if v}, **options}


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


def storage_error(uri: str, error: OSError, failed: str) -> DataError:
    """The user's error for a failed call on ``uri``: refused credentials, a missing bucket, or
    ``failed`` with the store's first line."""
    text = str(error)
    code = text.upper().replace("_", "")
    if access_denied(error):
        return DataError(f"{uri}: access denied{missing_credentials_hint(uri)}")
    if "NOSUCHBUCKET" in code or "BUCKET" in code and ("NOT FOUND" in code or "DOES NOT EXIST" in code):
        return DataError(f"{uri}: the bucket does not exist")
    return DataError(f"{uri}: {failed} ({text.splitlines()[0]})")


def _s3(settings: tuple) -> pafs.S3FileSystem:
    opts = with_env(dict(settings))
    endpoint = opts.get("endpoint_url")
    kwargs = {key: opts.get(key) for key in ("access_key", "secret_key", "session_token")}
    kwargs["region"] = opts.get("region") or "us-east-1"
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


@functools.lru_cache(maxsize=8)
def _filesystem(scheme: str, settings: tuple) -> pafs.FileSystem:
    """One filesystem per process and settings (never shared across a fork)."""
    if scheme == "s3":
        return _s3(settings)
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem()
    return pafs.LocalFileSystem()


@dataclass(frozen=True)
class Storage:
    """A run's object-store settings, resolved once (``from_options``) and passed down to every reader
    and writer, Ray tasks and workers included: it pickles as its settings, and each process opens its
    own filesystem from them. Methods take a local path or an ``s3://``/``gs://`` URI."""

    settings: tuple = ()

    @classmethod
    def from_options(cls, options: Union[str, dict, None] = None) -> Storage:
        """``--storage_options`` (JSON text or a mapping) over this process's AWS_* variables."""
        return cls(tuple(sorted(with_env(parse_options(options)).items())))

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """The filesystem and the path inside it."""
        parsed = urlparse(str(uri))
        if parsed.scheme in REMOTE_SCHEMES:
            return _filesystem(parsed.scheme, self.settings), (parsed.netloc + parsed.path).rstrip("/")
        return _filesystem("file", ()), str(Path(uri).resolve())

    def ray_storage(self, uri: str) -> tuple[Optional[pafs.FileSystem], str]:
        """What Ray Train and Tune take as ``storage_filesystem`` and ``storage_path``: a filesystem and the
        path inside it for object storage (so these settings apply), None and the path for a local folder."""
        return self.resolve(uri) if is_remote(uri) else (None, uri)

    def list_files(self, uri: str) -> list[pafs.FileInfo]:
        """Everything below ``uri``, recursively; a missing folder, refused credentials or a missing
        bucket raise DataError naming ``uri``."""
        fs, path = self.resolve(uri)
        try:
            return fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=False))
        except FileNotFoundError:
            raise DataError(f"{uri}: no such folder or prefix") from None
        except OSError as e:
            raise storage_error(uri, e, "cannot list") from None

    def children(self, uri: str) -> list[pafs.FileInfo]:
        """What lies directly in ``uri``, sorted by path; nothing when it does not exist."""
        fs, path = self.resolve(uri)
        try:
            return sorted(fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)), key=lambda i: i.path)
        except FileNotFoundError:
            return []

    def exists(self, uri: str) -> bool:
        fs, path = self.resolve(uri)
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_file(self, uri: str, listed: Optional[str] = None) -> bool:
        fs, path = self.resolve(uri)
        return fs.get_file_info(listed or path).type == pafs.FileType.File

    def read_bytes(self, uri: str, listed: Optional[str] = None) -> bytes:
        """The bytes of ``uri``, or of ``listed`` (a path as ``list_files`` gives it) in ``uri``'s filesystem."""
        fs, path = self.resolve(uri)
        with fs.open_input_stream(listed or path) as f:
            return f.read()

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode()

    def write_bytes(self, uri: str, data: bytes) -> None:
        fs, path = self.resolve(uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)  # the parent folder, for local paths
        with fs.open_output_stream(path) as f:
            f.write(data)

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode())

    def make_folder(self, uri: str) -> None:
        fs, path = self.resolve(uri)
        fs.create_dir(path, recursive=True)

    def upload_file(self, local: Union[str, Path], uri: str) -> None:
        """Copy a local file to ``uri``, streamed (an object store needs no folders: none are made)."""
        fs, path = self.resolve(uri)
        with open(local, "rb") as src, fs.open_output_stream(path) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)

    def copy_folder(self, local: Union[str, Path], uri: str) -> None:
        """Copy a local folder's files into ``uri`` (overwriting what is there)."""
        fs, path = self.resolve(uri)
        pafs.copy_files(str(local), path, destination_filesystem=fs)
