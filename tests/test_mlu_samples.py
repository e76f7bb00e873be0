"""Every sample model compiles for the MLU backend (all entry points in one .mlu, built for
the emulator) into a library exporting the Kiln ABI."""

import pytest

import runtime
from compiler.frontend.compile_graph import compile_entries
from tests.test_cuda_samples import _load
from tests.test_samples import CASES
from tests.helpers import assert_exports_kiln_abi


@pytest.mark.parametrize("name", sorted(CASES))
def test_sample_compiles_for_mlu(tmp_path, name):
    model, entries, _ = _load(name)
    out = compile_entries(model.graph, entries, tmp_path / name, target="mlu", dump_ir=False)
    m = runtime.manifest.read_manifest(out)
    assert m["target"] == {"kind": "mlu", "arch": "mtp_372", "emulated": True, "runtime": "host"}
    assert "__mlu_entry__" in (out / "src" / "model.mlu").read_text()
    assert_exports_kiln_abi(out / "lib" / "model.so", m["entry_points"], name)
