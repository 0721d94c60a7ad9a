"""The one domain error type and its stable codes.

Every failure a caller can see is an :class:`ObserveError` carrying an
:class:`observe.v1.errors_pb2.ErrorCode`::

    ObserveError(code, message)
     ├── fields: [FieldViolation(path, code, message)]   VALIDATION_FAILED & co.
     ├── retry_after: seconds                            429 / 409 / 503
     └── headers: extra response headers                 RateLimit-*, Allow

The code → HTTP status and code → gRPC status table is declared in
``errors.proto`` as an option on each enum value and read here once.
Domain code raises; the pipeline turns it into a gRPC status with
``google.rpc.ErrorInfo`` and ``google.rpc.BadRequest``; the gateway turns
that into the ``{error, code, fields}`` envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from observe.v1 import errors_pb2

_PREFIX = "ERROR_CODE_"
ErrorCode = errors_pb2.ErrorCode


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """One row of the code table."""

    name: str
    http_status: int
    grpc_status: grpc.StatusCode


def _load_table() -> dict[int, CodeInfo]:
    grpc_by_number = {s.value[0]: s for s in grpc.StatusCode}
    table: dict[int, CodeInfo] = {}
    for value in errors_pb2.ErrorCode.DESCRIPTOR.values:
        if value.number == 0:
            continue
        mapping = value.GetOptions().Extensions[errors_pb2.mapping]
        table[value.number] = CodeInfo(
            name=value.name.removeprefix(_PREFIX),
            http_status=mapping.http_status,
            grpc_status=grpc_by_number[mapping.grpc_code],
        )
    return table


CODES: dict[int, CodeInfo] = _load_table()
CODES_BY_NAME: dict[str, int] = {info.name: number for number, info in CODES.items()}


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: ``path`` like ``monitors[3].intervalSec``."""

    path: str
    code: str
    message: str


@dataclass(slots=True)
class ObserveError(Exception):
    """A failure with a stable code; the message is for humans."""

    code: int
    message: str
    fields: list[FieldViolation] = field(default_factory=list)
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # A page for people (content type, body) that REST sends instead of the
    # JSON envelope, with the code in X-Error-Code: what a web page's route
    # answers (a password form, "no such page"). gRPC sends the status alone.
    page: tuple[str, bytes] | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    @property
    def info(self) -> CodeInfo:
        return CODES[self.code]

    @property
    def name(self) -> str:
        return CODES[self.code].name

    @property
    def http_status(self) -> int:
        return CODES[self.code].http_status

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


def validation_failed(fields: list[FieldViolation], message: str = "") -> ObserveError:
    """A VALIDATION_FAILED error listing ``fields``."""
    if not message:
        first = fields[0]
        message = f"{first.path}: {first.message}" if first.path else first.message
        if len(fields) > 1:
            message += f" (and {len(fields) - 1} more)"
    return ObserveError(ErrorCode.ERROR_CODE_VALIDATION_FAILED, message, fields)


def not_found(what: str = "resource") -> ObserveError:
    return ObserveError(ErrorCode.ERROR_CODE_NOT_FOUND, f"{what} not found")


class Violations:
    """Collects field violations so a caller sees every problem at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, path: str, code: str, message: str) -> None:
        self.items.append(FieldViolation(path, code, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise validation_failed(self.items)

    def require_string(self, path: str, value: str, *, min_len: int = 1, max_len: int) -> None:
        """Adds ``required``/``too_small``/``too_big`` for a length-bounded string."""
        if not value:
            if min_len > 0:
                self.add(path, "required", "Required")
            return
        if len(value) < min_len:
            self.add(path, "too_small", f"Must be at least {min_len} characters")
        elif len(value) > max_len:
            self.add(path, "too_big", f"Must be at most {max_len} characters")

    def int_range(self, path: str, value: int, low: int, high: int) -> None:
        if value < low:
            self.add(path, "too_small", f"Must be at least {low}")
        elif value > high:
            self.add(path, "too_big", f"Must be at most {high}")
