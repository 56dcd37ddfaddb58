"""Reading what a submission left behind, as hostile input.

Everything under the workdir and the submission's own cache namespace was
writable by the child, so the parent opens it as an attacker's file: never
following a symlink (the child could point ``predictions.npy`` at another
submission's cached predictions), never blocking on a FIFO, refusing device
nodes, checking the size before reading and reading no more than the
expected bytes, validating the content (``.npy`` header against the expected
shape before the data; ``status.json`` against a schema). Every problem is an
:class:`UntrustedOutput` (a ``SubmissionError``), which the runner turns into a
``failed`` record: never a crash, a hang or an unbounded allocation.

Text that reaches a terminal, a record or a published page goes through
:func:`clean_text` (ANSI escapes and control characters removed, length capped).
"""

from __future__ import annotations

import ast
import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from itbench.errors import SubmissionError

STATUS_MAX_BYTES = 64 * 1024
MARKER_MAX_BYTES = 1024
SOURCE_MAX_BYTES = 2 * 2**20
NPY_HEADER_MAX = 4096
ALLOWED_DTYPES = ("<f4", "<f8", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "<u2", "<u4", "<u8", "|b1")

# CSI / OSC / other ESC sequences, then any C0/C1 control except \t \n \r
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class UntrustedOutput(SubmissionError):
    """A file the submission produced is not what the parent expects."""


def clean_text(text: str, limit: int | None = None, *, keep_cr: bool = False) -> str:
    """Text safe for a terminal, a record or a page: no escapes, no controls, capped.

    ``keep_cr`` keeps carriage returns (tqdm's live bars on the terminal);
    bidi overrides are dropped too (they can make a line read backwards).
    """
    text = _ANSI.sub("", text)
    if not keep_cr:
        text = text.replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if limit is not None and len(text) > limit:
        text = head_tail(text, limit)
    return text


def head_tail(text: str, limit: int) -> str:
    """Keep the start and the end of an overlong text, saying how much was cut."""
    if len(text) <= limit:
        return text
    half = max(limit // 2 - 40, 0)
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters omitted ...]\n{text[len(text) - half :]}"


# --- opening files ---------------------------------------------------------------


@contextlib.contextmanager
def open_regular(path: Path, max_bytes: int) -> Iterator[tuple[int, int]]:
    """``(fd, size)`` of a regular file at ``path``, opened without following links.

    The parent folder is opened with ``O_NOFOLLOW`` too, so neither the file
    nor its folder can be a symlink; ``O_NONBLOCK`` keeps a FIFO from hanging
    the open, and ``fstat`` on the opened descriptor rejects anything but a
    regular file at most ``max_bytes`` long.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        dir_fd = os.open(path.parent, flags | os.O_DIRECTORY)
    except OSError as err:
        raise UntrustedOutput(f"{path.parent.name}/ is not a plain folder ({_why(err)})") from None
    try:
        try:
            fd = os.open(path.name, flags, dir_fd=dir_fd)
        except OSError as err:
            if err.errno == errno.ENOENT:
                raise FileNotFoundError(str(path)) from None
            raise UntrustedOutput(f"{path.name} cannot be opened safely ({_why(err)})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UntrustedOutput(f"{path.name} is not a regular file ({_kind(info.st_mode)})")
            if info.st_size > max_bytes:
                raise UntrustedOutput(
                    f"{path.name} is {info.st_size} bytes, more than the {max_bytes} allowed"
                )
            yield fd, info.st_size
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def _why(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "it is a symbolic link"
    return os.strerror(err.errno) if err.errno else str(err)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _read_exact(fd: int, n: int) -> bytes:
    """Exactly ``n`` bytes (the file may not grow or shrink under us: the child is dead)."""
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    data = b"".join(chunks)
    if len(data) != n:
        raise UntrustedOutput(f"file ended after {len(data)} of {n} bytes")
    return data


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """A small regular file's bytes (FileNotFoundError when absent)."""
    with open_regular(path, max_bytes) as (fd, size):
        return _read_exact(fd, size)


def is_marker(path: Path) -> bool:
    """Whether a small regular file exists at ``path`` (a symlink or FIFO is no marker)."""
    try:
        read_bytes(path, MARKER_MAX_BYTES)
    except (FileNotFoundError, UntrustedOutput):
        return False
    return True


# --- predictions ------------------------------------------------------------------


def read_predictions(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The child's ``.npy`` predictions, checked header first, never unpickled.

    The header must describe exactly ``shape`` with a plain numeric dtype and
    the file must be exactly header plus data long, so a forged header cannot
    make the parent allocate or read more than ``shape`` needs.
    """
    itemsize = 8
    max_bytes = NPY_HEADER_MAX + shape[0] * shape[1] * itemsize
    try:
        with open_regular(path, max_bytes) as (fd, size):
            head = os.read(fd, min(size, NPY_HEADER_MAX))
            dtype, arr_shape, fortran, offset = _parse_npy_header(head)
            if arr_shape != shape:
                raise UntrustedOutput(f"predictions have shape {arr_shape}, expected {shape}")
            nbytes = int(np.prod(shape)) * dtype.itemsize
            if size != offset + nbytes:
                raise UntrustedOutput(
                    f"predictions file is {size} bytes; its header promises {offset + nbytes}"
                )
            data = head[offset:] + _read_exact(fd, nbytes - (len(head) - offset))
    except FileNotFoundError:
        raise UntrustedOutput("the submission process wrote no predictions") from None
    flat = np.frombuffer(data, dtype=dtype)
    array = flat.reshape(shape, order="F") if fortran else flat.reshape(shape)
    return array.astype(np.float64)


def read_rows(path: Path, n_rows: int, max_bytes: int) -> np.ndarray:
    """A child's 2-D ``.npy`` array with ``n_rows`` rows and any number of columns (features).

    Checked like predictions: header first, plain numeric dtype, exact length,
    never unpickled, never more than ``max_bytes`` read.
    """
    try:
        with open_regular(path, max_bytes) as (fd, size):
            head = os.read(fd, min(size, NPY_HEADER_MAX))
            dtype, arr_shape, fortran, offset = _parse_npy_header(head)
            if len(arr_shape) != 2 or arr_shape[0] != n_rows or arr_shape[1] < 1:
                raise UntrustedOutput(f"features have shape {arr_shape}, expected ({n_rows}, n_features)")
            nbytes = int(np.prod(arr_shape)) * dtype.itemsize
            if size != offset + nbytes:
                raise UntrustedOutput(f"features file is {size} bytes; its header promises {offset + nbytes}")
            data = head[offset:] + _read_exact(fd, nbytes - (len(head) - offset))
    except FileNotFoundError:
        raise UntrustedOutput("the submission process wrote no features") from None
    flat = np.frombuffer(data, dtype=dtype)
    return flat.reshape(arr_shape, order="F") if fortran else flat.reshape(arr_shape)


def _parse_npy_header(head: bytes) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """Parse an ``.npy`` header with ``ast.literal_eval``: dtype, shape, order, data offset."""
    if len(head) < 10 or head[:6] != b"\x93NUMPY":
        raise UntrustedOutput("predictions file is not a .npy array")
    major = head[6]
    if major == 1:
        hlen, start = int.from_bytes(head[8:10], "little"), 10
    elif major in (2, 3) and len(head) >= 12:
        hlen, start = int.from_bytes(head[8:12], "little"), 12
    else:
        raise UntrustedOutput(f"predictions file has an unknown .npy version {major}")
    if start + hlen > len(head) or hlen > NPY_HEADER_MAX:
        raise UntrustedOutput("predictions file has an oversized .npy header")
    try:
        header = ast.literal_eval(head[start : start + hlen].decode("latin1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise UntrustedOutput("predictions file has a malformed .npy header") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise UntrustedOutput("predictions file has a malformed .npy header")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str) or descr not in ALLOWED_DTYPES:
        raise UntrustedOutput(f"predictions have dtype {str(descr)[:40]!r}, not plain numbers")
    if not isinstance(fortran, bool):
        raise UntrustedOutput("predictions file has a malformed .npy header")
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise UntrustedOutput("predictions file has a malformed shape")
    return np.dtype(descr), shape, fortran, start + hlen


# --- status.json ---------------------------------------------------------------------


class ChildStatus(BaseModel):
    """What the worker reports in ``status.json`` (a claim, not a fact)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ok: bool
    fit_cached: bool = False
    features: bool | None = None  # the brainscore protocol's features run: whether the model offered them
    gram: bool | None = None  # ... and whether it sent their Gram matrix (wider than tall) instead
    phase: Literal["build", "fit", "predict", "features"] | None = None
    error_type: str | None = Field(default=None, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    error: str | None = Field(default=None, max_length=2000)
    where: str | None = Field(default=None, max_length=500, pattern=r"^[^\x00-\x1f\x7f:]+:[0-9]+$")
    hint: str | None = Field(default=None, max_length=2000)
    traceback: str | None = Field(default=None, max_length=8000)

    def failure_sentence(self) -> str:
        """Why a failed child says it failed: our sentence, with its (cleaned, capped) words quoted."""
        where = f" at {self.where}" if self.where else ""
        return f"{self.error_type} in {self.phase}{where}: {summarize(self.error, 500)}"


FAILURE_FIELDS = ("phase", "error_type", "error")
"""What a status of a failed run must name."""


def read_status(path: Path) -> ChildStatus | None:
    """The worker's status report, validated; None when it wrote none."""
    try:
        raw = read_bytes(path, STATUS_MAX_BYTES)
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UntrustedOutput("status.json is not valid JSON") from None
    try:
        status = ChildStatus.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "(top level)"
        where = name if name in ChildStatus.model_fields or not first["loc"] else "an unknown field"
        raise UntrustedOutput(f"status.json is malformed: {where}: {first['msg']}") from None
    if not status.ok:
        for name in FAILURE_FIELDS:  # the parent's sentence needs them all: a missing one is a lie
            if getattr(status, name) is None:
                raise UntrustedOutput(f"the submission process wrote an invalid status.json: {name} missing")
    for name in ("error_type", "error", "where", "hint", "traceback"):
        value = getattr(status, name)
        if value is not None:
            setattr(status, name, clean_text(value))
    return status


def scan_tree(root: Path, *, max_entries: int = 100_000) -> tuple[int, int]:
    """``(bytes used, largest file size)`` under ``root`` without following links.

    Stops after ``max_entries`` entries. Used to enforce the quota on a
    submission's writable folders (the largest size catches a sparse file).
    """
    total, largest, count = 0, 0, 0
    stack = [root]
    while stack and count < max_entries:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    count += 1
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(Path(entry.path))
                    elif stat.S_ISREG(info.st_mode):
                        largest = max(largest, info.st_size)
                    if count >= max_entries:
                        break
        except OSError:
            continue
    if count >= max_entries:  # a flood of files counts as over any quota
        total = max(total, 2**62)
    return total, largest


def plain_dir_chain(root: Path, *parts: str) -> Path:
    """``root/parts...``, refusing when any existing component under ``root`` is not a real folder.

    The parent acts on paths inside the submission's cache namespace (deleting
    a stale fitted state); a symlink planted there must not redirect that.
    """
    path = root
    for part in parts:
        path = path / part
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise UntrustedOutput(f"{path.relative_to(root)} in the submission's cache is not a folder")
    return path


def summarize(value: Any, limit: int = 300) -> str:
    """One safe line of an untrusted value for an error message."""
    return clean_text(str(value), limit).replace("\n", " ")
