"""Checksummed downloads of data files (pooch), with messages a user can act on.

Every file is streamed into a private staging folder next to its destination,
checked against its sha1, and only then moved into place. So a checksum
mismatch, a broken connection, a full disk or a killed process never leaves a
file that looks complete; running the command again starts cleanly.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

from itbench.errors import DownloadError

DEFAULT_BASE_URL = "https://brainscore-storage.s3.amazonaws.com/brainio-brainscore/"
MIRROR_ENV = "ITBENCH_MIRROR"
TIMEOUT_S = 60


def file_sha1(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha1 hex digest of a file, read in chunks (data files are hundreds of MB)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def base_url(mirror: str | None = None) -> str:
    """Where files come from: ``mirror``, else ``$ITBENCH_MIRROR``, else Brain-Score's bucket."""
    base = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_BASE_URL
    return base if base.endswith("/") else base + "/"


def _local_mirror(base: str) -> Path | None:
    """A mirror that is a folder on this machine (``file://`` URL or plain path), if it is one."""
    if base.startswith("file://"):
        return Path(urlparse(base).path)
    if "://" not in base:
        return Path(base)
    return None


class _HashingDownloader:
    """Wraps pooch's HTTP downloader to remember the sha1 of what actually arrived.

    pooch deletes a mismatching download before raising, so this is the only
    way to tell the user the actual checksum.
    """

    def __init__(self, progress: bool):
        import pooch

        self.inner = pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT_S)
        self.sha1: str | None = None
        self.bytes_written = 0

    def __call__(
        self,
        url: str,
        output_file: str | os.PathLike | IO[bytes],
        pooch_obj: object,
        check_only: bool = False,
    ) -> bool | None:
        result = self.inner(url, output_file, pooch_obj, check_only=check_only)
        if not check_only and isinstance(output_file, (str, os.PathLike)):
            self.sha1 = file_sha1(output_file)
        return result


def _host(url: str) -> str:
    return urlparse(url).netloc or url


def _manual_hint(filename: str, sha1: str, dest_dir: Path) -> str:
    return (
        f"use a reachable mirror (`--mirror URL` or {MIRROR_ENV}=URL; a local folder works too), "
        f"or put the file in place yourself: {dest_dir / filename} (sha1 {sha1})"
    )


def _mismatch(filename: str, url: str, expected: str, actual: str | None, dest_dir: Path) -> DownloadError:
    return DownloadError(
        f"checksum mismatch for {filename} from {url}: expected sha1 {expected}, "
        f"got {actual or 'unknown'}; the file was discarded",
        hint="the server or mirror holds a different file than the benchmark manifest; "
        + _manual_hint(filename, expected, dest_dir),
    )


def _disk_full(filename: str, dest_dir: Path, err: OSError) -> DownloadError:
    free = shutil.disk_usage(dest_dir).free if dest_dir.exists() else 0
    return DownloadError(
        f"disk full while downloading {filename} into {dest_dir} ({free / 1e6:.0f} MB free): {err.strerror}",
        hint="free some space there, or point ITBENCH_HOME at a bigger disk, then run the command again",
    )


def _translate(
    err: BaseException, filename: str, url: str, sha1: str, dest_dir: Path, actual: str | None
) -> DownloadError | None:
    """Turn a pooch/requests/OS failure into a DownloadError that says what to do."""
    import requests

    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return _disk_full(filename, dest_dir, err)
    if isinstance(err, ValueError) and "hash" in str(err).lower():
        return _mismatch(filename, url, sha1, actual, dest_dir)
    if isinstance(err, requests.exceptions.HTTPError):
        status = err.response.status_code if err.response is not None else "an error"
        return DownloadError(
            f"the server at {_host(url)} answered {status} for {url}",
            hint=_manual_hint(filename, sha1, dest_dir),
        )
    if isinstance(err, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return DownloadError(
            f"the download of {filename} from {_host(url)} was interrupted (connection broken mid-file); "
            "the partial file was discarded",
            hint="run the command again to restart the download; " + _manual_hint(filename, sha1, dest_dir),
        )
    if isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return DownloadError(
            f"could not reach {_host(url)} to download {filename} (offline, or the host is down): "
            f"{type(err).__name__}",
            hint=_manual_hint(filename, sha1, dest_dir),
        )
    if isinstance(err, requests.exceptions.RequestException):
        return DownloadError(
            f"downloading {filename} from {url} failed: {err}", hint=_manual_hint(filename, sha1, dest_dir)
        )
    if isinstance(err, OSError):
        return DownloadError(
            f"could not write {filename} into {dest_dir}: {err}",
            hint="check that the folder is writable (or set ITBENCH_HOME), then run the command again",
        )
    return None


def _copy_from_folder(src_dir: Path, filename: str, sha1: str, staging: Path, dest_dir: Path) -> Path:
    """'Download' from a local mirror folder: copy, then verify like a real download."""
    src = src_dir / filename
    if not src.is_file():
        raise DownloadError(
            f"the mirror folder {src_dir} has no {filename}",
            hint=_manual_hint(filename, sha1, dest_dir),
        )
    staged = staging / filename
    shutil.copyfile(src, staged)
    actual = file_sha1(staged)
    if actual != sha1:
        raise _mismatch(filename, str(src), sha1, actual, dest_dir)
    return staged


def fetch_file(
    filename: str,
    sha1: str,
    dest_dir: str | os.PathLike,
    mirror: str | None = None,
    progress: bool = True,
) -> Path:
    """Make ``dest_dir/filename`` exist with the given sha1, downloading it if needed.

    Source: ``mirror`` (URL or local folder), else ``$ITBENCH_MIRROR``, else
    Brain-Score's public bucket. A present file with the right sha1 is not
    downloaded again. Failures raise :class:`DownloadError` and leave nothing
    behind in ``dest_dir``.
    """
    dest_dir = Path(dest_dir)
    dest = dest_dir / filename
    sha1 = sha1.lower()
    if dest.is_file() and file_sha1(dest) == sha1:
        return dest
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(
            f"cannot create the data folder {dest_dir}: {err}", hint="set ITBENCH_HOME to a writable folder"
        ) from err
    base = base_url(mirror)
    url = base + filename
    staging = dest_dir / f".partial-{filename}"
    shutil.rmtree(staging, ignore_errors=True)  # leftovers of a killed earlier run
    downloader: _HashingDownloader | None = None
    try:
        staging.mkdir()
        local = _local_mirror(base)
        if local is not None:
            staged = _copy_from_folder(local, filename, sha1, staging, dest_dir)
        else:
            import pooch

            pooch.get_logger().setLevel("WARNING")  # its INFO line names the staging path
            if progress:
                sys.stderr.write(f"downloading {filename} from {_host(url)}\n")
            downloader = _HashingDownloader(progress)
            staged = Path(
                pooch.retrieve(
                    url,
                    known_hash=f"sha1:{sha1}",
                    fname=filename,
                    path=staging,
                    downloader=downloader,
                    progressbar=progress,
                )
            )
        os.replace(staged, dest)
    except DownloadError:
        raise
    except Exception as err:
        translated = _translate(err, filename, url, sha1, dest_dir, downloader.sha1 if downloader else None)
        if translated is None:
            raise
        raise translated from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
