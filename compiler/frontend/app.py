"""``tf.app.run`` and ``tf.app.flags`` / ``tf.flags``: TF1's absl-style command-line flags.

Every TensorFlow tutorial starts with ``flags.DEFINE_integer(...)``, ``FLAGS = flags.FLAGS``
and ends with ``tf.app.run()``. This module gives the same behaviour without absl, parsing
with Python's ``argparse``:

* ``DEFINE_string/integer/float/boolean/bool/list/enum(name, default, help)`` register a
  flag on ``FLAGS`` (a second definition of a name is a ``DuplicateFlagError``, as in absl).
* ``FLAGS.name`` reads a value. The first read of an unparsed ``FLAGS`` parses ``sys.argv``
  tolerating unknown flags, as TF1's wrapper does.
* ``FLAGS(argv)`` parses ``argv[1:]`` and returns ``[argv[0]]`` plus the arguments that are
  not flags. Accepted spellings: ``--name=value``, ``--name value``, ``-name``; booleans
  also ``--name``, ``--noname``, ``--name=false``. An unknown flag is an
  ``UnrecognizedFlagError`` (``Unknown command line flag 'x'``), a bad value an
  ``IllegalFlagValueError``; ``--help`` prints the flags and exits, as absl does.
* ``tf.app.run(main=None, argv=None)`` parses the flags from ``argv`` (default
  ``sys.argv``), calls ``main(remaining argv)`` (default ``__main__.main``) and exits with
  ``sys.exit(main's return value)``. Like TF1 (``_parse_flags_tolerate_undef``), it leaves
  unknown flags in the argv given to ``main``; a bad flag value prints absl's
  ``FATAL Flags parsing error`` and exits with status 1.
"""
from __future__ import annotations

import argparse
import os
import sys

from .tf_api import Namespace

_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


class Error(Exception):
    """Base of the flag errors (absl's ``flags.Error``)."""


class UnrecognizedFlagError(Error):
    """A command-line flag that no ``DEFINE_*`` declared."""


class IllegalFlagValueError(Error):
    """A flag value that does not parse as the flag's type (or is out of its bounds)."""


class DuplicateFlagError(Error):
    """A second ``DEFINE_*`` of a name already defined."""


class _Flag:
    """One flag: its name, default, help text, kind (for ``--help``) and string parser."""

    def __init__(self, name, default, help_text, kind, parse, describe=""):
        self.name, self.help, self.kind, self._parse, self.describe = name, help_text, kind, parse, describe
        self.default = self.parse(default) if isinstance(default, str) and kind != "string" else default

    def parse(self, text):
        try:
            return self._parse(text)
        except (ValueError, TypeError) as err:
            raise IllegalFlagValueError(f"flag --{self.name}={text}: {err}") from None

    def help_lines(self) -> list[str]:
        lines = [f"  --{'[no]' if self.kind == 'bool' else ''}{self.name}: {self.help}",
                 f"    (default: {_show(self.default)!r})"]
        return lines + ([f"    ({self.describe})"] if self.describe else [])


def _show(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


def _bool(text) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise ValueError("expected true/false")


def _bounded(convert, lower, upper):
    def parse(text):
        value = convert(text)
        if (lower is not None and value < lower) or (upper is not None and value > upper):
            raise ValueError(f"must be in [{lower}, {upper}]")
        return value
    return parse


class FlagValues:
    """The flag registry and parsed values (``FLAGS``); attribute access reads a value."""

    def __init__(self):
        object.__setattr__(self, "_flags", {})
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_parsed", False)

    # --- definition and access -------------------------------------------------------------
    def _define(self, flag: _Flag):
        if flag.name in self._flags:
            raise DuplicateFlagError(f"The flag '{flag.name}' is defined twice.")
        self._flags[flag.name] = flag
        self._values[flag.name] = flag.default

    def __getattr__(self, name):
        if name.startswith("__") or name not in self._flags:
            raise AttributeError(name)
        if not self._parsed:
            self(sys.argv, known_only=True)  # TF1: the first read parses sys.argv
        return self._values[name]

    def __setattr__(self, name, value):
        if name not in self._flags:
            raise AttributeError(f"no flag '{name}' is defined")
        self._values[name] = value

    def __contains__(self, name):
        return name in self._flags

    def __iter__(self):
        return iter(self._flags)

    def is_parsed(self) -> bool:
        return self._parsed

    def mark_as_parsed(self):
        object.__setattr__(self, "_parsed", True)

    def flag_values_dict(self) -> dict:
        return dict(self._values)

    # --- parsing ---------------------------------------------------------------------------
    def __call__(self, argv, known_only=False):
        """Parse ``argv[1:]``; return ``[argv[0]]`` + the arguments that are not flags."""
        argv = list(argv)
        if not argv:
            raise ValueError("argv cannot be empty (it starts with the program name)")
        head, tail = argv[1:], []
        if "--" in head:
            at = head.index("--")
            head, tail = head[:at], head[at + 1:]
        if any(arg in ("--help", "-help", "-h", "--helpshort", "--helpfull") for arg in head):
            print(self.help_text(argv[0]))
            sys.exit(1)  # absl exits with 1 after printing the help
        try:
            parsed, rest = self._parser().parse_known_args(self._normalize(head))
        except argparse.ArgumentError as err:  # e.g. "--steps" with no value
            raise IllegalFlagValueError(str(err)) from None
        unknown = [arg for arg in rest if arg.startswith("-") and arg != "-"]
        if unknown and not known_only:
            name = unknown[0].lstrip("-").split("=", 1)[0]
            raise UnrecognizedFlagError(f"Unknown command line flag '{name}'")
        for name, raw in vars(parsed).items():
            self._values[name] = raw if isinstance(raw, bool) else self._flags[name].parse(raw)
        self.mark_as_parsed()
        return argv[:1] + rest + tail

    def _normalize(self, args):
        """Rewrite ``--flag=false`` of a boolean to ``--noflag`` (argparse has no such form)."""
        out = []
        for arg in args:
            name, eq, value = arg.lstrip("-").partition("=")
            flag = self._flags.get(name)
            if arg.startswith("-") and eq and flag is not None and flag.kind == "bool":
                arg = f"--{'' if flag.parse(value) else 'no'}{name}"
            out.append(arg)
        return out

    def _parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
        for name, flag in self._flags.items():
            if flag.kind == "bool":
                parser.add_argument(f"--{name}", f"-{name}", dest=name, action="store_true",
                                    default=argparse.SUPPRESS)
                parser.add_argument(f"--no{name}", f"-no{name}", dest=name, action="store_false",
                                    default=argparse.SUPPRESS)
            else:
                parser.add_argument(f"--{name}", f"-{name}", dest=name, default=argparse.SUPPRESS)
        return parser

    def help_text(self, program) -> str:
        lines = [f"       USAGE: {os.path.basename(program)} [flags]", "flags:", ""]
        for name in sorted(self._flags):
            lines += self._flags[name].help_lines()
        return "\n".join(lines)


FLAGS = FlagValues()


def DEFINE_string(name, default, help, flag_values=FLAGS, **_):  # noqa: A002 (TF's name)
    """Define a string flag."""
    flag_values._define(_Flag(name, default, help, "string", str))


def DEFINE_integer(name, default, help, lower_bound=None, upper_bound=None, flag_values=FLAGS, **_):  # noqa: A002
    """Define an integer flag (optionally bounded)."""
    flag_values._define(_Flag(name, default, help, "int", _bounded(int, lower_bound, upper_bound),
                              "an integer"))


def DEFINE_float(name, default, help, lower_bound=None, upper_bound=None, flag_values=FLAGS, **_):  # noqa: A002
    """Define a float flag (optionally bounded)."""
    flag_values._define(_Flag(name, default, help, "float", _bounded(float, lower_bound, upper_bound),
                              "a number"))


def DEFINE_boolean(name, default, help, flag_values=FLAGS, **_):  # noqa: A002
    """Define a boolean flag: ``--name``, ``--noname``, ``--name=true|false``."""
    flag_values._define(_Flag(name, default, help, "bool", _bool))


DEFINE_bool = DEFINE_boolean


def DEFINE_list(name, default, help, flag_values=FLAGS, **_):  # noqa: A002
    """Define a comma-separated list-of-strings flag."""
    def parse(text):
        return list(text) if isinstance(text, (list, tuple)) else [p.strip() for p in text.split(",") if p.strip()]
    flag_values._define(_Flag(name, default, help, "list", parse, "a comma separated list"))


def DEFINE_enum(name, default, enum_values, help, flag_values=FLAGS, **_):  # noqa: A002
    """Define a string flag whose value must be one of ``enum_values``."""
    choices = list(enum_values)

    def parse(text):
        if text not in choices:
            raise ValueError(f"value should be one of <{'|'.join(choices)}>")
        return text
    flag_values._define(_Flag(name, default, help, "enum", parse, f"<{'|'.join(choices)}>"))


def run(main=None, argv=None):
    """Parse flags from ``argv`` (default ``sys.argv``), call ``main(argv)``, exit with its result."""
    main = main or sys.modules["__main__"].main
    argv = sys.argv if argv is None else argv
    try:
        remaining = FLAGS(argv, known_only=True)
    except Error as err:
        sys.stderr.write(f"FATAL Flags parsing error: {err}\n"
                         "Pass --helpshort or --helpfull to see help on flags.\n")
        sys.exit(1)
    sys.exit(main(remaining))


_FLAG_NAMES = {
    "FLAGS": FLAGS, "FlagValues": FlagValues, "DEFINE_string": DEFINE_string,
    "DEFINE_integer": DEFINE_integer, "DEFINE_float": DEFINE_float, "DEFINE_boolean": DEFINE_boolean,
    "DEFINE_bool": DEFINE_bool, "DEFINE_list": DEFINE_list, "DEFINE_enum": DEFINE_enum,
    "Error": Error, "UnrecognizedFlagError": UnrecognizedFlagError,
    "IllegalFlagValueError": IllegalFlagValueError, "DuplicateFlagError": DuplicateFlagError,
}
# one object for tf.app.flags and tf.flags, as in TF1, with the other namespaces' "no attribute" message
flags = Namespace("tf.app.flags", "absl-style command-line flags (tf.app.flags / tf.flags).")
flags.__dict__.update(_FLAG_NAMES)

TF_API = {
    "tf": {"flags": flags},
    "tf.app": {"run": run, "flags": flags},
    "tf.app.flags": _FLAG_NAMES,
}
