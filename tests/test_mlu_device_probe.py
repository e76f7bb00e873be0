"""The runtime's MLU device check (runtime/mlu.py): a cncc-built artifact (library kind
``"mlu"``) runs only where CNRT reports a device.  A stand-in ``libcnrt.so`` built here
plays the vendor library, found under ``$NEUWARE_HOME/lib64`` like the real one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

FAKE_CNRT = """
typedef int cnrtRet_t;
cnrtRet_t cnrtGetDeviceCount(unsigned int* count) { *count = %(count)d; return %(code)d; }
"""


def _probe(tmp_path, count=None, code=0) -> dict:
    """``missing_device`` for an ``mlu`` library, with a stand-in CNRT reporting ``count``
    devices and status ``code`` (no library at all when ``count`` is None), in a fresh process."""
    home = tmp_path / "neuware"
    if count is not None:
        (home / "lib64").mkdir(parents=True)
        src = tmp_path / "cnrt.c"
        src.write_text(FAKE_CNRT % {"count": count, "code": code})
        subprocess.run(["gcc", "-shared", "-fPIC", str(src), "-o", str(home / "lib64" / "libcnrt.so")], check=True)
    code_ = textwrap.dedent("""
        import json
        from runtime import devices, mlu
        print(json.dumps({"count": mlu.device_count(), "missing": devices.missing_device({"runtime": "mlu"})}))
    """)
    env = {**os.environ, "NEUWARE_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", code_], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(os.path.exists("/usr/local/neuware/lib64/libcnrt.so"), reason="a real Neuware SDK is installed")
def test_without_cnrt_an_mlu_library_is_refused_naming_the_sdk(tmp_path):
    got = _probe(tmp_path)
    assert got["count"] == 0
    assert "no usable Cambricon MLU" in got["missing"] and "libcnrt.so" in got["missing"]


def test_cnrt_with_a_device_runs_an_mlu_library(tmp_path):
    assert _probe(tmp_path, count=2) == {"count": 2, "missing": ""}


def test_cnrt_without_devices_or_failing_is_refused_with_its_reason(tmp_path):
    none = _probe(tmp_path / "a", count=0)
    assert none["count"] == 0 and "CNRT reports no MLU" in none["missing"]
    failing = _probe(tmp_path / "b", count=1, code=632015)
    assert failing["count"] == 0 and "CNRT error 632015" in failing["missing"]
