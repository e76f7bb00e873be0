"""``tf.logging``: TF1's logging functions over Python's ``logging`` (logger ``"tensorflow"``).

As in TF1, the levels are Python's (``DEBUG`` 10 ... ``FATAL`` 50), ``set_verbosity``
sets the logger's level (unset, the effective level is Python's default ``WARNING``, so
``tf.logging.info`` prints only after ``set_verbosity(tf.logging.INFO)``), and ``fatal``
logs without exiting. A stderr handler is added on first use only when the root logger
has none, so an application's (or pytest's) logging configuration is respected.
"""
from __future__ import annotations

import collections
import logging
import sys
import threading

DEBUG, INFO, WARN, ERROR, FATAL = logging.DEBUG, logging.INFO, logging.WARN, logging.ERROR, logging.FATAL
WARNING = WARN

_logger = None
_lock = threading.Lock()
_counts: collections.Counter = collections.Counter()  # calls per (file, line), for log_every_n


def get_logger() -> logging.Logger:
    """The ``"tensorflow"`` logger that every ``tf.logging`` call writes to."""
    global _logger
    with _lock:
        if _logger is None:
            _logger = logging.getLogger("tensorflow")
            if not logging.getLogger().handlers and not _logger.handlers:
                handler = logging.StreamHandler(sys.stderr)
                handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
                _logger.addHandler(handler)
    return _logger


def set_verbosity(v):
    """Log messages at level ``v`` and above."""
    get_logger().setLevel(v)


def get_verbosity() -> int:
    """The effective level of the logger."""
    return get_logger().getEffectiveLevel()


def log(level, msg, *args, **kwargs):
    """Log ``msg % args`` at ``level``."""
    get_logger().log(level, msg, *args, **kwargs)


def debug(msg, *args, **kwargs):
    """Log at DEBUG."""
    log(DEBUG, msg, *args, **kwargs)


def info(msg, *args, **kwargs):
    """Log at INFO."""
    log(INFO, msg, *args, **kwargs)


def warning(msg, *args, **kwargs):
    """Log at WARN."""
    log(WARN, msg, *args, **kwargs)


warn = warning


def error(msg, *args, **kwargs):
    """Log at ERROR."""
    log(ERROR, msg, *args, **kwargs)


def fatal(msg, *args, **kwargs):
    """Log at FATAL (TF1 logs and carries on; it does not exit)."""
    log(FATAL, msg, *args, **kwargs)


def vlog(level, msg, *args, **kwargs):
    """Log at ``level`` (TF1's verbose log is a plain log call)."""
    log(level, msg, *args, **kwargs)


def _count_call_site() -> int:
    """How many times the caller of this module's caller has been here before (per file:line)."""
    frame = sys._getframe(2)
    key = (frame.f_code.co_filename, frame.f_lineno)
    with _lock:
        n = _counts[key]
        _counts[key] += 1
    return n


def log_every_n(level, msg, n, *args):
    """Log on the 1st, (n+1)th, (2n+1)th ... call from this line."""
    if _count_call_site() % max(int(n), 1) == 0:
        log(level, msg, *args)


def log_first_n(level, msg, n, *args):
    """Log on the first ``n`` calls from this line."""
    if _count_call_site() < n:
        log(level, msg, *args)


def log_if(level, msg, condition, *args):
    """Log when ``condition`` is true."""
    if condition:
        log(level, msg, *args)


_NAMES = {name: globals()[name] for name in (
    "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "set_verbosity", "get_verbosity", "log",
    "debug", "info", "warning", "warn", "error", "fatal", "vlog", "log_every_n", "log_first_n", "log_if")}

TF_API = {"tf.logging": _NAMES, "tf": {"get_logger": get_logger}}
