"""The C ABI is defined once (runtime/abi_spec.py) and generated into ``kiln_abi.h``: a C
program compiled against the header sees the runtime's numbers and drives a compiled
artifact through its prototypes; every artifact carries the header (hashed in the
manifest); the CUDA source embeds it instead of repeating numbers; and both backends take
the ABI version from the spec when they render (docs/ABI.md)."""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.artifact import ABI_HEADER
from compiler.codegen.c.environment import abi_header
from runtime import abi, abi_spec
from runtime import manifest as mf
from tests.cuda_kit import needs_emulator
from tests.kernel_ir_kit import sum_with_check_program

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc missing")

CONSTANTS_C = r"""
#include <stdio.h>
#include "kiln_abi.h"
int main(void) {
  printf("KILN_ABI_VERSION %d\n", KILN_ABI_VERSION);
  printf("KILN_OK %d\nKILN_EINVAL %d\nKILN_ENOMEM %d\nKILN_ECHECK %d\nKILN_EBACKEND %d\n",
         KILN_OK, KILN_EINVAL, KILN_ENOMEM, KILN_ECHECK, KILN_EBACKEND);
  printf("KILN_BIND_ALIGNMENT %d\nKILN_ERROR_BYTES %d\nKILN_ENTRY_PREFIX %s\n",
         KILN_BIND_ALIGNMENT, KILN_ERROR_BYTES, KILN_ENTRY_PREFIX);
  return 0;
}
"""

# A client of a compiled artifact, written against the header only: y = 2 x + v.
CLIENT_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "kiln_abi.h"
int main(void) {
  if (kiln_abi_version() != KILN_ABI_VERSION || kiln_num_variables() != 1) return 10;
  kiln_state *s = kiln_create();
  if (!s) return 11;
  float v[3] = {1, 2, 3}, x[6] = {0, 1, 2, 3, 4, 5}, y[6];
  if (kiln_write_variable(s, 0, v, sizeof v) != KILN_OK) return 12;
  if (kiln_read_variable(s, 7, v, sizeof v) != KILN_EINVAL || !strstr(kiln_last_error(s), "index 7")) return 13;
  kiln_entry_fn run;
  *(void **)&run = dlsym(RTLD_DEFAULT, KILN_ENTRY_PREFIX "run");  /* POSIX's idiom */
  const void *feeds[1] = {x};
  void *fetches[1] = {y};
  if (!run || run(s, 2, feeds, fetches) != KILN_OK) return 14;
  if (run(s, 0, feeds, fetches) != KILN_EINVAL) return 15;
  for (int i = 0; i < 6; ++i) printf("%g ", y[i]);
  kiln_destroy(s);
  return 0;
}
"""


def _gcc(tmp_path, source, *extra, lang="c"):
    """Compile ``source`` against the generated header; returns the program's stdout."""
    (tmp_path / "kiln_abi.h").write_text(abi_header())
    src = tmp_path / f"prog.{lang}"
    src.write_text(source)
    cc = ["gcc", "-std=c99"] if lang == "c" else ["g++", "-x", "c++"]
    exe = tmp_path / f"prog_{lang}"
    built = subprocess.run([*cc, "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{tmp_path}", str(src), "-o",
                            str(exe), *extra], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(exe)], capture_output=True, text=True)
    assert ran.returncode == 0, f"exit {ran.returncode}: {ran.stdout}{ran.stderr}"
    return ran.stdout


@needs_gcc
@pytest.mark.parametrize("lang", ["c", "cpp"])
def test_header_constants_are_the_runtimes(tmp_path, lang):
    got = dict(line.split(" ", 1) for line in _gcc(tmp_path, CONSTANTS_C, lang=lang).splitlines())
    want = {"KILN_ABI_VERSION": runtime.ABI_VERSION, "KILN_BIND_ALIGNMENT": abi.BIND_ALIGNMENT,
            "KILN_ERROR_BYTES": abi_spec.ERROR_BYTES, "KILN_ENTRY_PREFIX": abi_spec.ENTRY_PREFIX,
            **{name: code for code, name in abi.ERROR_NAMES.items()}}
    assert got == {k: str(v) for k, v in want.items()}
    assert mf.ABI_VERSION == runtime.ABI_VERSION and abi.KILN_ECHECK == 3


def test_header_declares_every_abi_function():
    text = abi_header()
    for fn in abi_spec.FUNCTIONS:
        params = ", ".join(f"{t}{'' if t.endswith('*') else ' '}{n}" for t, n in fn.params) or "void"
        assert f"{fn.restype}{'' if fn.restype.endswith('*') else ' '}{fn.name}({params});" in text
    assert "typedef int32_t (*kiln_entry_fn)(kiln_state *state, int64_t batch, const void *const *feeds, " \
           "void *const *fetches);" in text


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from compiler.frontend.compile_graph import compile_entries

    g = tf.Graph()
    with g.as_default():
        x = tf.placeholder(tf.float32, [None, 3], name="x")
        v = tf.get_variable("v", [3], initializer=tf.zeros_initializer())
        y = tf.identity(2.0 * x + v, name="y")
    return compile_entries(g, {"run": ([y], [], [x])}, tmp_path_factory.mktemp("abi") / "art", dump_ir=False)


def test_artifact_carries_the_header(artifact, tmp_path):
    m = runtime.read_manifest(artifact)
    assert (artifact / ABI_HEADER).read_text() == abi_header()
    assert m["files"][ABI_HEADER] == mf.file_digest(artifact / ABI_HEADER)
    copy = tmp_path / "art"
    shutil.copytree(artifact, copy)
    (copy / ABI_HEADER).write_text(abi_header().replace("KILN_OK 0", "KILN_OK 9"))
    with pytest.raises(runtime.ArtifactError, match="kiln_abi.h: hash mismatch"):
        runtime.load_artifact(copy)


@needs_gcc
def test_a_c_program_runs_an_artifact_through_the_header(artifact, tmp_path):
    lib = artifact / "lib" / "model.so"
    out = _gcc(tmp_path, CLIENT_C, str(lib), f"-Wl,-rpath,{lib.parent}", "-ldl")
    assert [float(v) for v in out.split()] == [1, 4, 7, 7, 10, 13]


def test_cuda_source_embeds_the_header_and_repeats_no_number():
    from compiler.codegen.cuda import program_variables, render_module

    program = sum_with_check_program()
    source = render_module({"p": program}, program_variables([program]))
    assert abi_header() in source
    names = [c.name for c in abi_spec.ERROR_CODES] + ["KILN_ABI_VERSION", "KILN_ERROR_BYTES", "KILN_BIND_ALIGNMENT"]
    define = re.compile(r"#define\s+(" + "|".join(names) + r")\b")
    assert len(define.findall(source)) == len(names)  # the header's definitions only
    for template in (TEMPLATES / "cuda").glob("*"):
        assert not define.search(template.read_text()), template.name
    assert "kiln_abi_version(void) { return KILN_ABI_VERSION; }" in source


def _abi_version(path) -> int:
    fn = ctypes.CDLL(str(path)).kiln_abi_version
    fn.restype = ctypes.c_int32
    return fn()


@needs_emulator
def test_backends_render_the_spec(tmp_path, monkeypatch):
    """Both backends read the ABI version from runtime/abi_spec.py when they render."""
    from compiler.codegen.cuda import program_variables, render_module
    from compiler.codegen.cuda.build import compile_cuda
    from compiler.codegen.llvm.build import compile_module
    from compiler.codegen.llvm.module import build_module

    monkeypatch.setattr(abi_spec, "ABI_VERSION", 77)
    program = sum_with_check_program()
    assert "#define KILN_ABI_VERSION 77\n" in abi_header()
    compile_module(build_module({"p": program}, []), str(tmp_path / "cpu.so"))
    compile_cuda(render_module({"p": program}, program_variables([program])), tmp_path / "cuda.so", emulate=True)
    assert _abi_version(tmp_path / "cpu.so") == _abi_version(tmp_path / "cuda.so") == 77
