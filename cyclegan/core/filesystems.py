"""How a URI reaches its filesystem: local folders, ``s3://`` and ``gs://`` URIs, through pyarrow (and s3fs
for conditional writes), one filesystem per process and settings; ``--storage_options`` checked; a bucket's
region found; a store's failure turned into the user's error naming the URI.

Where the store is (endpoint, region) comes from ``storage_options`` (endpoint_url, region) or the
AWS_ENDPOINT_URL / AWS_REGION variables, so S3-compatible stores such as MinIO work; that is all a Storage
carries to other processes and nodes. With no region given, each bucket's own region is asked of the store
(so a us-west-2 bucket works from a node whose instance role names no region), then the AWS config's
(``~/.aws/config``), then us-east-1. Credentials are found by each process on its own node through the AWS
SDK's standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, ~/.aws, the instance role,
IRSA web identity), which also renews temporary ones; Google Cloud Storage uses the node's default
credentials. Keys given in ``storage_options`` stay in the process that read them (never pickled, never in
messages or logs).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from typing import Optional, Union
from urllib.parse import urlparse

import pyarrow.fs as pafs

from .errors import DataError

S3_OPTION_KEYS = ("access_key", "secret_key", "session_token", "region", "endpoint_url")
SECRET_KEYS = ("access_key", "secret_key", "session_token")
REMOTE_SCHEMES = ("s3", "gs", "gcs")


def is_remote(uri: str) -> bool:
    return urlparse(str(uri)).scheme in REMOTE_SCHEMES


def parse_options(text: Union[str, dict, None]) -> dict:
    """``--storage_options`` is a JSON object; unknown keys are named in the error."""
    if not text:
        return {}
    try:
        options = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as e:  # e.msg only: the text may hold a key
        raise DataError(f"storage_options: not a JSON object ({e.msg})") from None
    if not isinstance(options, dict):  # its items are never shown: they may be credentials
        raise DataError(f"storage_options: a JSON object of settings is needed, not a {type(options).__name__}")
    unknown = sorted(set(options) - set(S3_OPTION_KEYS))
    if unknown:  # named when they look like names (a pasted credential as a key is not repeated)
        names = [k for k in unknown if re.fullmatch(r"[A-Za-z_]{1,40}", str(k))]
        more = f" and {len(unknown) - len(names)} other(s)" if len(names) < len(unknown) else ""
        raise DataError(f"storage_options: unknown key(s) {names}{more}; expected some of {list(S3_OPTION_KEYS)}")
    return options


def location_from_env(options: dict) -> dict:
    """Where the store is (endpoint_url, region): from ``options``, else this process's AWS_* variables.
    Not secret, and all that travels with a Storage."""
    env = os.environ
    found = {"region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
             "endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")}
    given = {k: v for k, v in options.items() if k not in SECRET_KEYS}
    return {**{k: v for k, v in found.items() if v}, **given}


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


@contextlib.contextmanager
def reached(uri: str, failed: str):
    """A store's failure (unreachable, refused, no bucket) as the user's error naming ``uri``, one line;
    a missing file stays FileNotFoundError (callers ask for it)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as e:
        raise storage_error(uri, e, failed) from None


def bucket_region(bucket: str, endpoint_url: Optional[str]) -> Optional[str]:
    """The region S3 reports for ``bucket`` (the x-amz-bucket-region header of HeadBucket, which comes with
    a refusal too, so the request is unsigned); None where the store does not say or cannot be reached."""
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}))
    try:
        response = client.head_bucket(Bucket=bucket)
    except ClientError as e:
        response = e.response
    except BotoCoreError:
        return None
    return response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region") or None


def configured_region() -> Optional[str]:
    """The AWS SDK's configured region: its variables and the profile in ``~/.aws/config``."""
    import botocore.session
    return botocore.session.get_session().get_config_variable("region") or None


@functools.lru_cache(maxsize=64)
def with_region(settings: tuple, bucket: str) -> tuple:
    """``settings`` with a region for ``bucket``: the given one, else the bucket's own, else the
    configured one, else us-east-1. Decided once per process, settings and bucket (every read and write
    of the bucket resolves it)."""
    opts = dict(settings)
    if opts.get("region"):
        return settings
    region = bucket_region(bucket, opts.get("endpoint_url")) or configured_region() or "us-east-1"
    return tuple(sorted({**opts, "region": region}.items()))


def _s3(settings: tuple, secrets: tuple) -> pafs.S3FileSystem:
    """Without explicit keys, the AWS SDK's default chain finds this node's credentials."""
    opts = dict(settings)
    endpoint = opts.get("endpoint_url")
    kwargs: dict = dict(secrets)
    kwargs["region"] = opts["region"]
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


@functools.lru_cache(maxsize=8)
def open_filesystem(scheme: str, settings: tuple, secrets: tuple = ()) -> pafs.FileSystem:
    """One filesystem per process and settings (never shared across a fork)."""
    if scheme == "s3":
        return _s3(settings, secrets)
    if scheme in ("gs", "gcs"):
        return pafs.GcsFileSystem()
    return pafs.LocalFileSystem()


@functools.lru_cache(maxsize=8)
def open_s3fs(settings: tuple, secrets: tuple = ()):
    """s3fs for what pyarrow's S3 filesystem cannot do: conditional writes (If-None-Match, If-Match)."""
    import s3fs
    opts, keys = dict(settings), dict(secrets)
    return s3fs.S3FileSystem(key=keys.get("access_key"), secret=keys.get("secret_key"),
                             token=keys.get("session_token"), skip_instance_cache=True,
                             client_kwargs={"endpoint_url": opts.get("endpoint_url"),
                                            "region_name": opts["region"]})
