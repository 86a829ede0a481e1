"""Where files live: one :class:`Storage` a run resolves its settings into once and hands down; every read,
write and listing of the project goes through it (local paths and ``s3://``/``gs://`` URIs alike), small
files written only if unchanged since read (``read_tagged``/``write_if``), and a local folder mirrored to
the run's storage (:class:`FolderMirror`). How a URI reaches its filesystem, with which settings and
credentials, is in ``filesystems.py``.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlparse

import pyarrow.fs as pafs

from .errors import DataError

# is_remote, parse_options, storage_error and SECRET_KEYS are imported from here too
from .filesystems import (
    REMOTE_SCHEMES,
    SECRET_KEYS,
    is_remote,
    location_from_env,
    open_filesystem,
    open_s3fs,
    parse_options,
    reached,
    storage_error,
    with_region,
)


@contextlib.contextmanager
def _folder_locked(folder: Optional[Path]):
    """An exclusive lock on a local folder (flock on its descriptor) while the block runs."""
    if folder is None:
        yield
        return
    import fcntl
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    try:  # a killed process its parent has not reaped yet is a zombie: ended
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


class Changed(Exception):
    """A conditional write found the file other than expected: someone else wrote it meanwhile."""


def _precondition_failed(error: BaseException) -> bool:
    if isinstance(error, FileExistsError):
        return True
    cause = getattr(error, "__cause__", None)
    code = str(getattr(cause, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


@dataclass(frozen=True)
class Storage:
    """A run's object-store settings, resolved once (``from_options``) and passed down to every reader
    and writer, Ray tasks and workers included: it pickles as its location settings alone (endpoint,
    region), and each process opens its own filesystem with its own node's credentials. Keys given in
    ``--storage_options`` (``secrets``) are used in this process only. Methods take a local path or an
    ``s3://``/``gs://`` URI."""

    settings: tuple = ()
    secrets: tuple = field(default=(), repr=False)

    @classmethod
    def from_options(cls, options: Union[str, dict, None] = None) -> Storage:
        """``--storage_options`` (JSON text or a mapping) over this process's AWS_ENDPOINT_URL/AWS_REGION."""
        options = parse_options(options)
        secrets = tuple(sorted((k, v) for k, v in options.items() if k in SECRET_KEYS and v))
        return cls(tuple(sorted(location_from_env(options).items())), secrets)

    def __reduce__(self):
        return Storage, (self.settings,)  # the secrets never leave this process

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """The filesystem and the path inside it."""
        parsed = urlparse(str(uri))
        if parsed.scheme == "s3":
            settings = with_region(self.settings, parsed.netloc)
            return open_filesystem("s3", settings, self.secrets), (parsed.netloc + parsed.path).rstrip("/")
        if parsed.scheme in REMOTE_SCHEMES:
            return open_filesystem(parsed.scheme, self.settings, self.secrets), (parsed.netloc + parsed.path).rstrip("/")
        return open_filesystem("file", ()), str(Path(uri).resolve())

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
        with reached(uri, "cannot reach it"):
            return fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_file(self, uri: str, listed: Optional[str] = None) -> bool:
        fs, path = self.resolve(uri)
        with reached(uri, "cannot reach it"):
            return fs.get_file_info(listed or path).type == pafs.FileType.File

    def read_bytes(self, uri: str, listed: Optional[str] = None, limit: Optional[int] = None) -> bytes:
        """The bytes of ``uri``, or of ``listed`` (a path as ``list_files`` gives it) in ``uri``'s filesystem.
        ``limit``: refuse (DataError) an object larger than this many bytes, reading no more than that."""
        fs, path = self.resolve(uri)
        with reached(uri, "cannot read"), fs.open_input_stream(listed or path) as f:
            data = f.read() if limit is None else f.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise DataError(f"{uri}: more than {limit} bytes, larger than such a file can be; not read")
        return data

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode()

    def write_bytes(self, uri: str, data: bytes) -> None:
        """All of ``data`` or nothing: an object is stored when its upload completes; a local file is
        written beside and renamed into place, so a killed writer never leaves a partial one."""
        fs, path = self.resolve(uri)
        with reached(uri, "cannot write"):
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)  # the parent folder, for local paths
            local = isinstance(fs, pafs.LocalFileSystem)
            target = f"{path}.{os.getpid()}.part" if local else path
            with fs.open_output_stream(target) as f:
                f.write(data)
            if local:
                fs.move(target, path)

    def remove_stale_parts(self, uri: str, names: Container[str], wait_s: float = 0.0) -> int:
        """Below a local folder, the ``<name>.<pid>.part`` files (``write_bytes``'s, before their rename)
        of the files ``names`` (paths below ``uri``) whose writers are gone (killed mid-write); how many
        went. Any other file is left alone: a user's ``notes.123.part`` is no writer's. A live writer's are
        left alone too, after waiting up to ``wait_s`` for it to end (a killed job's workers are stopped by
        Ray a moment after their driver, and one may be mid-write then); object stores have none (an
        object appears whole or not at all)."""
        fs, path = self.resolve(uri)
        if not isinstance(fs, pafs.LocalFileSystem) or not Path(path).is_dir():
            return 0
        deadline, removed = time.monotonic() + wait_s, 0
        while True:
            live = []
            for part, pid in self._parts_of(Path(path), names):
                if process_alive(pid):
                    live.append(part)
                else:
                    part.unlink(missing_ok=True)
                    removed += 1
            if not live or time.monotonic() >= deadline:
                return removed
            time.sleep(0.2)  # polling a process that is being stopped: there is nothing to wait on

    @staticmethod
    def _parts_of(root: Path, names: Container[str]) -> list[tuple[Path, int]]:
        """The ``<name>.<pid>.part`` files below ``root`` of the files ``names`` (relative to it), and pids."""
        found = []
        for part in root.rglob("*.part"):
            m = re.fullmatch(r"(.+)\.(\d+)\.part", part.name)
            if m and part.is_file() and (part.parent / m.group(1)).relative_to(root).as_posix() in names:
                found.append((part, int(m.group(2))))
        return found

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode())

    def _conditional(self, uri: str):
        """s3fs (what conditional writes need) for an ``s3://`` URI, in its bucket's region, and the path."""
        return open_s3fs(with_region(self.settings, urlparse(uri).netloc), self.secrets), uri[len("s3://"):]

    def read_tagged(self, uri: str, limit: Optional[int] = None) -> tuple[bytes, str]:
        """A small file's bytes and a tag of this version of it, for ``write_if``; FileNotFoundError if absent.
        ``limit``: no more than that many bytes and one are read (more than ``limit`` says the file is
        larger); the tag is still the whole version's."""
        end = None if limit is None else limit + 1
        if urlparse(uri).scheme == "s3":
            fs, path = self._conditional(uri)
            with reached(uri, "cannot read"):
                while True:  # the tag before and after the read agree: the bytes are that version's
                    info = fs.info(path, refresh=True)
                    ranged = end is not None and info["size"] >= end  # (a range of an empty object is refused)
                    data = fs.cat_file(path, start=0, end=end) if ranged else fs.cat_file(path)
                    if fs.info(path, refresh=True)["ETag"] == info["ETag"]:
                        return data, info["ETag"]
        fs, path = self.resolve(uri)
        digest, parts, kept = hashlib.sha256(), [], 0
        with reached(uri, "cannot read"), fs.open_input_stream(path) as f:
            while chunk := f.read(1 << 20):  # hashed as it streams: a huge file is never held whole
                digest.update(chunk)
                if end is None or kept < end:
                    parts.append(chunk)
                    kept += len(chunk)
        return b"".join(parts)[:end], digest.hexdigest()

    def write_if(self, uri: str, data: bytes, tag: Optional[str]) -> str:
        """Write a small file only if it is still the version ``tag`` names (None: only if it does not
        exist); raises Changed otherwise. Returns the new version's tag. On S3 the store decides (a
        conditional PUT); in a local folder a lock on the folder makes the check and the write one step;
        on GCS, which pyarrow gives no precondition for, the check comes just before the write."""
        if urlparse(uri).scheme == "s3":
            fs, path = self._conditional(uri)
            condition = {"mode": "create"} if tag is None else {"IfMatch": tag}
            with reached(uri, "cannot write"):
                try:
                    return fs.pipe_file(path, data, **condition)["ETag"]
                except OSError as e:
                    if _precondition_failed(e):
                        raise Changed(uri) from None
                    raise
        local = not is_remote(uri)
        with _folder_locked(Path(uri).parent if local else None):
            try:
                now = self.read_tagged(uri, limit=0)[1]
            except FileNotFoundError:
                now = None
            if now != tag:
                raise Changed(uri)
            self.write_bytes(uri, data)
        return hashlib.sha256(data).hexdigest()

    def remove(self, uri: str) -> None:
        """Delete one file or object (gone already is fine)."""
        fs, path = self.resolve(uri)
        with reached(uri, "cannot delete"):
            try:
                fs.delete_file(path)
            except FileNotFoundError:
                pass

    def make_folder(self, uri: str) -> None:
        fs, path = self.resolve(uri)
        fs.create_dir(path, recursive=True)

    def upload_file(self, local: Union[str, Path], uri: str) -> None:
        """Copy a local file to ``uri``, streamed. An object appears whole when its upload completes; a local
        copy is written beside its name and renamed, so no reader ever sees half a file."""
        fs, path = self.resolve(uri)
        target = path
        if not is_remote(uri):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            path = f"{Path(path).parent}/.{Path(path).name}.{os.getpid()}.tmp"
        with open(local, "rb") as src, fs.open_output_stream(path) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        if path != target:
            os.replace(path, target)

    def copy_folder(self, local: Union[str, Path], uri: str) -> None:
        """Copy a local folder's files into ``uri`` (overwriting what is there)."""
        fs, path = self.resolve(uri)
        pafs.copy_files(str(local), path, destination_filesystem=fs)


class FolderMirror:
    """Keeps ``uri`` (a folder or an s3://, gs:// prefix) a copy of the local folder ``local``: each
    ``sync`` uploads the files that are new or changed since the last one (a node's outputs reach the
    run's storage, so losing the node loses nothing). Folders named in ``skip`` stay local."""

    def __init__(self, store: Storage, local: Union[str, Path], uri: str, skip: tuple[str, ...] = ()):
        self.store, self.local, self.uri, self.skip = store, Path(local), uri.rstrip("/"), skip
        self.sent: dict[Path, tuple[int, int]] = {}

    def sync(self) -> int:
        """Upload what changed; returns the number of files sent."""
        sent = 0
        for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
            rel = path.relative_to(self.local)
            if rel.parts[0] in self.skip or path.name.startswith("."):  # skipped, or a file being written
                continue
            stat = path.stat()
            if self.sent.get(rel) == (stat.st_mtime_ns, stat.st_size):
                continue
            self.store.upload_file(path, f"{self.uri}/{rel.as_posix()}")
            self.sent[rel] = (stat.st_mtime_ns, stat.st_size)
            sent += 1
        return sent
