"""The compile cache's key memo (compiler/cache_memo.py): facts remembered under a probe,
recomputed when the probe changes, and a broken memo only costs the recomputation."""
import dataclasses
import json
import os

from compiler import cache, cache_memo
from compiler.codegen import registry
from compiler.codegen.registry import get_backend, make_target


def test_remembered_until_the_probe_changes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    assert cache_memo.remembered(tmp_path, "fact", "p1", compute) == {"n": 1}
    assert cache_memo.remembered(tmp_path, "fact", "p1", compute) == {"n": 1}  # from the memo
    assert cache_memo.remembered(tmp_path, "fact", "p2", compute) == {"n": 2}
    assert cache_memo.remembered(tmp_path, "fact", "", compute) == {"n": 3}  # no probe: never kept
    assert cache_memo.remembered(None, "fact", "p1", compute) == {"n": 4}   # no folder: never kept
    assert len(calls) == 4


def test_broken_memo_is_recomputed_and_rewritten(tmp_path):
    (tmp_path / cache_memo.MEMO_NAME).write_text("{not json")
    assert cache_memo.remembered(tmp_path, "fact", "p", lambda: 7) == 7
    assert json.loads((tmp_path / cache_memo.MEMO_NAME).read_text()) == {"fact:p": 7}
    (tmp_path / cache_memo.MEMO_NAME).write_text("[1, 2]")  # valid JSON, wrong shape
    assert cache_memo.remembered(tmp_path, "fact", "p", lambda: 8) == 8


def test_memo_keeps_a_bounded_number_of_facts(tmp_path):
    for k in range(cache_memo.MAX_FACTS + 10):
        cache_memo.remembered(tmp_path, "fact", str(k), lambda: 0)
    memo = json.loads((tmp_path / cache_memo.MEMO_NAME).read_text())
    assert len(memo) == cache_memo.MAX_FACTS and f"fact:{cache_memo.MAX_FACTS + 9}" in memo


def test_files_probe_sees_size_and_mtime(tmp_path):
    f = tmp_path / "a.py"
    f.write_text("x = 1\n")
    before = cache_memo.files_probe([("a.py", f)])
    os.utime(f, ns=(1, 1))
    assert cache_memo.files_probe([("a.py", f)]) != before
    touched = cache_memo.files_probe([("a.py", f)])
    f.write_text("x = 12\n")
    os.utime(f, ns=(1, 1))
    assert cache_memo.files_probe([("a.py", f)]) != touched  # same mtime, other size


def test_cpu_probe_ignores_the_clock():
    probe = cache_memo.cpu_probe()
    if os.path.exists("/proc/cpuinfo"):
        assert len(probe) == 64 and probe == cache_memo.cpu_probe()


def test_target_key_uses_the_remembered_record(tmp_path, monkeypatch):
    """The CPU record comes from the memo while the probe matches (no LLVM call), and a
    changed probe (another CPU or llvmlite) asks the backend again."""
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KILN_CACHE", raising=False)
    target = make_target("cpu")
    real = cache.target_key(target)
    assert real[3] == target.record() and (tmp_path / cache_memo.MEMO_NAME).is_file()
    asked = []
    monkeypatch.setattr(type(target), "record", lambda self: asked.append(1) or {"kind": "cpu", "cpu": "other"})
    assert cache.target_key(target) == real and not asked
    cpu = get_backend("cpu")
    monkeypatch.setitem(registry._registered, "cpu", dataclasses.replace(cpu, record_probe=lambda t: "another"))
    assert cache.target_key(target)[3] == {"kind": "cpu", "cpu": "other"} and asked == [1]


def test_core_count_is_part_of_the_cpu_key(tmp_path, monkeypatch):
    """A library planned for 2 cores is slower on 64: the CPU record (and so the cache key)
    holds the usable cores, and the memo's probe sees them change."""
    from compiler import host

    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KILN_CACHE", raising=False)
    target = make_target("cpu")
    here = cache.target_key(target)
    assert here[3]["cores"] == host.host_cores()
    monkeypatch.setattr(host, "host_cores", lambda: 64)
    there = cache.target_key(target)
    assert there[3]["cores"] == 64 and there != here
