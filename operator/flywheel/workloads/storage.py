"""Listing, reading and writing objects behind s3://, file:// and http(s):// URIs.

Every failure leaves here as a `SnapshotError` whose reason says what kind of
problem it is (unreachable, access denied, nothing there) and whose message
names the URI, never a credential.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .errors import Reason, SnapshotError

CHUNK_BYTES = 1 << 20
HTTP_TIMEOUT_SECONDS = 30
# A store that refuses connections for a moment (a restart, a failover) is
# waited for here, doubling the wait, for about half a minute. Longer than
# that the command ends with a named reason (exit 10) so the operator can say
# which store is down, and the Job's own backoff (10 s, 20 s, ...) retries the pod.
RETRY_DELAYS_SECONDS = (1, 2, 4, 8, 15)
# S3 error codes worth another try: the server is up but cannot answer now.
S3_TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "503", "500", "502"}
)

log = logging.getLogger("flywheel.storage")
T = TypeVar("T")

# S3 error codes that mean "these credentials may not do this"; anything else
# from the server is treated as the store being unusable right now.
S3_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "Forbidden",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "401",
        "403",
    }
)


@dataclass(frozen=True)
class StoredObject:
    key: str  # path relative to the source URI: what the version hashes
    uri: str  # where it is, for messages
    size: int | None  # from the listing; None when unknown before reading
    named: bool = False  # the URI names this object itself (not a prefix)


class Readable(Protocol):
    """What readers need of a stream: `read` and `close`."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class Store(Protocol):
    def list(self) -> list[StoredObject]: ...

    def open(self, obj: StoredObject) -> Readable: ...

    def local_path(self, obj: StoredObject) -> Path | None: ...


def is_hidden(key: str) -> bool:
    """Hidden by the Hadoop/Spark convention pyarrow datasets also follow:
    `_SUCCESS`, `.crc` files, `_temporary/` and Kubernetes' `..data` links."""
    return any(part.startswith((".", "_")) for part in key.split("/"))


def open_store(
    uri: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    authorization: str | None = None,
) -> Store:
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "s3":
        return S3Store(uri, s3_client(endpoint, region))
    if scheme == "file":
        return FileStore(uri)
    if scheme in ("http", "https"):
        return HttpStore(uri, authorization)
    raise SnapshotError("InvalidSpec", f"unsupported URI scheme {scheme!r} in {uri}")


# --- file:// ---------------------------------------------------------------


def file_path(uri: str) -> Path:
    return Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path))


class FileStore:
    """A file or a directory tree, typically on a read-only mounted volume."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.root = file_path(uri)

    def list(self) -> list[StoredObject]:
        try:
            if self.root.is_file():
                return [self._object(self.root, self.root.name, named=True)]
            if not self.root.is_dir():
                raise SnapshotError(
                    "SourceUnreachable",
                    f"{self.uri}: no such file or directory "
                    "(is the volume in spec.source.volumeClaim mounted?)",
                )
            return [self._object(path, key) for path, key in self._walk()]
        except PermissionError as exc:
            raise SnapshotError("AccessDenied", f"{self.uri}: permission denied ({exc})") from exc

    def _walk(self) -> Iterator[tuple[Path, str]]:
        # followlinks: volumes often expose data through symlinks (ConfigMaps do).
        for directory, subdirs, files in os.walk(self.root, followlinks=True):
            subdirs[:] = [d for d in subdirs if not is_hidden(d)]
            for name in files:
                path = Path(directory) / name
                key = path.relative_to(self.root).as_posix()
                if not is_hidden(key) and path.is_file():
                    yield path, key

    def _object(self, path: Path, key: str, named: bool = False) -> StoredObject:
        return StoredObject(key=key, uri=path.as_uri(), size=path.stat().st_size, named=named)

    def open(self, obj: StoredObject) -> Readable:
        path = file_path(obj.uri)
        try:
            return path.open("rb")
        except PermissionError as exc:
            raise SnapshotError("AccessDenied", f"{obj.uri}: permission denied") from exc
        except OSError as exc:
            raise SnapshotError("SourceUnreachable", f"{obj.uri}: {exc.strerror}") from exc

    def local_path(self, obj: StoredObject) -> Path | None:
        return file_path(obj.uri)


# --- s3:// -----------------------------------------------------------------


def s3_client(endpoint: str | None, region: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        # Fail within seconds on an unreachable endpoint instead of minutes.
        connect_timeout=10,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        # S3-compatible servers (MinIO, Ceph, ...) rarely have wildcard DNS for
        # virtual-hosted buckets, and some reject the CRC checksums boto3 sends
        # by default since 1.36.
        s3={"addressing_style": "path" if endpoint else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def split_s3_uri(uri: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(uri)
    return parts.netloc, parts.path.lstrip("/")


def s3_reason(exc: BaseException) -> Reason:
    """Which reason an exception from boto3 stands for."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return "AccessDenied"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in S3_ACCESS_CODES or status in ("401", "403"):
            return "AccessDenied"
        if code in ("NoSuchKey", "404"):
            return "NoObjects"
    return "SourceUnreachable"


def s3_transient(exc: BaseException) -> bool:
    """The store did not answer or said "not now": the same request may work later."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, SSLError

    if isinstance(exc, SSLError):
        return False  # a wrong certificate stays wrong
    if isinstance(exc, ConnectionError | HTTPClientError):
        return True  # refused, reset, timed out: EndpointConnectionError and kin
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in S3_TRANSIENT_CODES or int(status) >= 500
    return False


def with_retries(
    call: Callable[[], T],
    what: str,
    *,
    delays: tuple[float, ...] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, tried again after each of `delays` (RETRY_DELAYS_SECONDS) while
    the S3 store is unavailable (s3_transient); any other error, or the last, is raised."""
    waits = RETRY_DELAYS_SECONDS if delays is None else delays
    for attempt, delay in enumerate((*waits, None), start=1):
        try:
            return call()
        except Exception as exc:
            if delay is None or not s3_transient(exc):
                raise
            log.warning("%s: %s (attempt %d; next in %g s)", what, exc, attempt, delay)
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def s3_message(action: str, uri: str, endpoint: str | None, exc: BaseException) -> str:
    where = f" at {endpoint}" if endpoint else ""
    if s3_transient(exc):
        waited = sum(RETRY_DELAYS_SECONDS)
        return f"cannot {action} {uri}{where}: {exc}; the store did not answer for {waited} s"
    hint = {
        "AccessDenied": "; check the Secret named in spec.source.credentials",
        "SourceUnreachable": "; check spec.source.endpoint and the bucket name",
    }.get(s3_reason(exc), "")
    return f"cannot {action} {uri}{where}: {exc}{hint}"


class S3Store:
    """Every object under a prefix, or the one object a key names exactly."""

    def __init__(self, uri: str, client: Any) -> None:
        self.uri = uri
        self.client = client
        self.bucket, self.prefix = split_s3_uri(uri)

    def _guard(self, action: str, uri: str) -> Callable[[BaseException], SnapshotError]:
        endpoint = self.client.meta.endpoint_url
        return lambda exc: SnapshotError(s3_reason(exc), s3_message(action, uri, endpoint, exc))

    def list(self) -> list[StoredObject]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            keys = with_retries(lambda: list(self._list_keys()), f"listing {self.uri}")
        except (BotoCoreError, ClientError) as exc:
            raise self._guard("list", self.uri)(exc) from exc
        exact = [(key, size) for key, size in keys if key == self.prefix]
        if exact and not self.prefix.endswith("/"):
            key, size = exact[0]
            return [self._object(key, posixpath.basename(key), size, named=True)]
        # "data" must not match "data2/...": a prefix is a folder unless it is a key.
        folder = self.prefix.rstrip("/") + "/" if self.prefix else ""
        return [
            self._object(key, key[len(folder) :], size)
            for key, size in keys
            if key.startswith(folder) and not key.endswith("/")
            if not is_hidden(key[len(folder) :])
        ]

    def _list_keys(self) -> Iterator[tuple[str, int]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"], item["Size"]

    def _object(self, key: str, relative: str, size: int, named: bool = False) -> StoredObject:
        return StoredObject(relative, f"s3://{self.bucket}/{key}", size, named)

    def open(self, obj: StoredObject) -> Readable:
        from botocore.exceptions import BotoCoreError, ClientError

        _, key = split_s3_uri(obj.uri)
        guard = self._guard("read", obj.uri)
        try:
            body = with_retries(
                lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"],
                f"reading {obj.uri}",
            )
        except (BotoCoreError, ClientError) as exc:
            raise guard(exc) from exc
        return GuardedStream(body, (BotoCoreError, ClientError, OSError), guard)

    def local_path(self, obj: StoredObject) -> Path | None:
        return None


# --- http(s):// ------------------------------------------------------------


class HttpStore:
    """One object at a URL, fetched with an optional Authorization header."""

    def __init__(self, uri: str, authorization: str | None) -> None:
        self.uri = uri
        self.authorization = authorization

    def list(self) -> list[StoredObject]:
        # Listing would cost a request the read repeats; the GET reports errors.
        name = posixpath.basename(urllib.parse.urlsplit(self.uri).path) or "data"
        return [StoredObject(key=name, uri=self.uri, size=None, named=True)]

    def open(self, obj: StoredObject) -> Readable:
        request = urllib.request.Request(obj.uri)
        if self.authorization:
            request.add_header("Authorization", self.authorization)
        try:
            response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS)
        except urllib.error.HTTPError as exc:
            raise SnapshotError(http_reason(exc.code), f"GET {obj.uri}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SnapshotError("SourceUnreachable", f"GET {obj.uri}: {reason}") from exc

        def guard(exc: BaseException) -> SnapshotError:
            return SnapshotError("SourceUnreachable", f"reading {obj.uri}: {exc}")

        return GuardedStream(response, (OSError,), guard)

    def local_path(self, obj: StoredObject) -> Path | None:
        return None


def http_reason(status: int) -> Reason:
    if status in (401, 403):
        return "AccessDenied"
    if status in (404, 410):
        return "NoObjects"
    return "SourceUnreachable"


# --- streams ---------------------------------------------------------------


class GuardedStream:
    """A readable stream whose transport errors become SnapshotErrors.

    pyarrow and gzip read through it; a dropped connection half-way through a
    file must say "unreachable", not look like corrupt data."""

    def __init__(
        self,
        raw: Any,
        errors: tuple[type[BaseException], ...],
        guard: Callable[[BaseException], SnapshotError],
    ) -> None:
        self._raw = raw
        self._errors = errors
        self._guard = guard

    def read(self, size: int = -1) -> bytes:
        try:
            return self._raw.read(size)
        except self._errors as exc:
            raise self._guard(exc) from exc

    def close(self) -> None:
        self._raw.close()


def spool(stream: Readable, directory: str | None = None) -> Path:
    """Copy a stream to a temporary file, for readers that need random access
    (Parquet keeps its footer at the end). The caller deletes the file."""
    handle, name = tempfile.mkstemp(prefix="flywheel-", suffix=".spool", dir=directory)
    with os.fdopen(handle, "wb") as out:
        while chunk := stream.read(CHUNK_BYTES):
            out.write(chunk)
    return Path(name)


# --- writing ---------------------------------------------------------------


def write_object(uri: str, data: bytes, *, endpoint: str | None = None) -> None:
    """Write one object (the profile); failures are ProfileUnwritable."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "file":
        _write_file(file_path(uri), data, uri)
    elif scheme == "s3":
        _write_s3(uri, data, endpoint)
    else:
        raise SnapshotError("InvalidSpec", f"profile URI must be s3:// or file://, not {uri}")


def _write_file(path: Path, data: bytes, uri: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a profile.
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as exc:
        raise SnapshotError("ProfileUnwritable", f"cannot write {uri}: {exc.strerror}") from exc


def _write_s3(uri: str, data: bytes, endpoint: str | None) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_uri(uri)
    client = s3_client(endpoint, None)
    try:
        # A repeated put of the same key replaces the object: retrying cannot duplicate.
        with_retries(
            lambda: client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType="application/json"
            ),
            f"writing {uri}",
        )
    except (BotoCoreError, ClientError) as exc:
        message = s3_message("write", uri, endpoint, exc)
        raise SnapshotError("ProfileUnwritable", message) from exc
