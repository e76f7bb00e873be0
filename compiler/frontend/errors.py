"""tf.errors: TensorFlow's exception classes, raised by Session.run where TF raises them.

``OpError(node_def, op, message)`` as in TF.  The classes Kiln raises for bad inputs also
derive from ``ValueError`` (what Kiln raised before, and what a numpy user expects), so
``except ValueError`` keeps working.
"""
from __future__ import annotations


class OpError(Exception):
    """An error while running a graph (``message``; ``op`` is the failing op when known)."""

    error_code = 2

    def __init__(self, node_def, op, message, *args):
        super().__init__(message)
        self.node_def, self.op, self.message = node_def, op, message

    def __str__(self):
        return self.message


class CancelledError(OpError):
    error_code = 1


class UnknownError(OpError):
    error_code = 2


class InvalidArgumentError(OpError, ValueError):
    """A fed value or a runtime check is invalid (unfed placeholder, label out of range)."""

    error_code = 3


class DeadlineExceededError(OpError):
    error_code = 4


class NotFoundError(OpError, ValueError):
    error_code = 5


class AlreadyExistsError(OpError):
    error_code = 6


class PermissionDeniedError(OpError):
    error_code = 7


class ResourceExhaustedError(OpError):
    error_code = 8


class FailedPreconditionError(OpError, ValueError):
    """E.g. reading a variable that was never initialized."""

    error_code = 9


class AbortedError(OpError):
    error_code = 10


class OutOfRangeError(OpError, ValueError):
    error_code = 11


class UnimplementedError(OpError):
    error_code = 12


class InternalError(OpError):
    error_code = 13


class UnavailableError(OpError):
    error_code = 14


class DataLossError(OpError, ValueError):
    error_code = 15


class UnauthenticatedError(OpError):
    error_code = 16


_CLASSES = [OpError, CancelledError, UnknownError, InvalidArgumentError, DeadlineExceededError,
            NotFoundError, AlreadyExistsError, PermissionDeniedError, ResourceExhaustedError,
            FailedPreconditionError, AbortedError, OutOfRangeError, UnimplementedError, InternalError,
            UnavailableError, DataLossError, UnauthenticatedError]

TF_API = {"tf.errors": {cls.__name__: cls for cls in _CLASSES}}
