"""Typed reads of single header fields: each names the field and what is wrong with it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dsa110_ingest.errors import HeaderTooLargeError, InvalidHeaderError, MissingFieldError
from dsa110_ingest.uvh5.node import Node

MAX_TEXT_BYTES = 64 * 2**10


def missing_field(path: str, key: str) -> MissingFieldError:
    return MissingFieldError(
        path,
        f"required header field Header/{key} is missing",
        "the file was not written by a UVH5 writer",
    )


def _scalar(path: str, group: Node, key: str, numeric: bool = True) -> Any:
    v = group.read_number(key, 1) if numeric else group.read(key, 1, MAX_TEXT_BYTES)
    if v is None:
        raise missing_field(path, key)
    if v.size != 1:
        raise InvalidHeaderError(path, f"Header/{key} should be a scalar, has shape {v.shape}")
    x = v.reshape(()).item()
    return x.item() if isinstance(x, np.generic) else x


def int_field(path: str, group: Node, key: str, lo: int = 0, hi: int = 2**40) -> int:
    v = _scalar(path, group, key)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise InvalidHeaderError(path, f"Header/{key} = {v!r} is not an integer in {lo}..{hi}")
    return v


def float_field(path: str, group: Node, key: str) -> float:
    v = _scalar(path, group, key)
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InvalidHeaderError(path, f"Header/{key} = {v!r} is not a number") from None
    if not math.isfinite(x):
        raise InvalidHeaderError(path, f"Header/{key} is {x} (not finite)")
    return x


def text_field(path: str, group: Node, key: str) -> str:
    v = _scalar(path, group, key, numeric=False)
    if isinstance(v, bytes | str) and len(v) > MAX_TEXT_BYTES:
        # a variable-length string: read already (no bigger than the file), never kept
        raise HeaderTooLargeError(
            path,
            f"Header/{key} is a {len(v)}-byte string (limit {MAX_TEXT_BYTES})",
            "the file cannot be used; write it again",
        )
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, str):
        return v
    raise InvalidHeaderError(path, f"Header/{key} should be a string, got {type(v).__name__}")


def array_field(path: str, group: Node, key: str, max_size: int) -> np.ndarray:
    v = group.read_number(key, max_size)
    if v is None:
        raise missing_field(path, key)
    return v


def finite_array(path: str, key: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind not in "iuf":
        raise InvalidHeaderError(path, f"Header/{key} has non-numeric type {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if a.size == 0 or not np.isfinite(a).all():
        raise InvalidHeaderError(
            path,
            f"Header/{key} is empty or holds NaN/inf values",
            "the correlator wrote a bad header; the file cannot be used",
        )
    return a


def opt_float(group: Node, key: str) -> float | None:
    try:
        v = group.read_number(key, 1)
    except (ValueError, OverflowError):
        return None
    if v is None or v.size != 1 or v.dtype.kind not in "iuf":
        return None
    val = float(v.reshape(()))
    return val if math.isfinite(val) else None
