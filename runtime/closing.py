"""A base for runtime objects that hold a resource (a native state, a prefetch thread)."""
from __future__ import annotations


class Closing:
    """``close()`` via a ``with`` block, and as a last resort when garbage-collected."""

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - may run during interpreter shutdown
            pass
