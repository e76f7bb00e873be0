"""Data-parallel training (docs/distributed.md): the communicator, Horovod's TF1 API, the
split train step, and (with mpi4py + mpiexec) real 2-rank jobs on localhost compared with
one process training on the whole batch."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from compiler import horovod as hvd
from compiler import tf
from compiler.cli_workers import strip_workers
from compiler.frontend.collectives import split_entry
from runtime import checkpoint as ck
from runtime.collective import CollectiveError, LocalComm, timeout_s

from . import mpi_kit

PROGRAM = os.path.join(mpi_kit.FIXTURES, "horovod_mnist.py")
MODEL = os.path.join(mpi_kit.FIXTURES, "dist_mlp.py")


# ----------------------------------------------------------------------------- one process
def test_local_comm_and_timeout_setting(monkeypatch):
    comm = LocalComm()
    buf = np.arange(3, dtype=np.float32)
    assert comm.allreduce(buf, "average") is buf and buf.tolist() == [0, 1, 2]
    with pytest.raises(CollectiveError, match="unknown op 'mean'"):
        comm.allreduce(buf, "mean")
    monkeypatch.setenv("KILN_COLLECTIVE_TIMEOUT", "2.5")
    assert timeout_s() == 2.5
    monkeypatch.setenv("KILN_COLLECTIVE_TIMEOUT", "soon")
    with pytest.raises(CollectiveError, match="KILN_COLLECTIVE_TIMEOUT"):
        timeout_s()


def test_strip_workers():
    assert strip_workers(["train", "a", "--workers", "2", "--epochs", "3"]) == ["train", "a", "--epochs", "3"]
    assert strip_workers(["train", "--workers=4", "a"]) == ["train", "a"]


def _mlp_step(distributed, fresh_graph):
    """Three Adam steps of a tiny MLP in one process; (losses, final weights)."""
    rng = np.random.RandomState(0)
    xs, ys = rng.normal(size=(12, 5)).astype(np.float32), rng.randint(0, 3, 12)
    x, y = tf.placeholder(tf.float32, [None, 5]), tf.placeholder(tf.int64, [None])
    w = tf.get_variable("w", [5, 3], initializer=tf.random_normal_initializer(seed=2))
    b = tf.get_variable("b", [3], initializer=tf.zeros_initializer())
    loss = tf.losses.sparse_softmax_cross_entropy(y, tf.matmul(x, w) + b)
    opt = tf.train.AdamOptimizer(0.1)
    train = (hvd.DistributedOptimizer(opt) if distributed else opt).minimize(loss)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        if distributed:
            sess.run(hvd.broadcast_global_variables(0))
        losses = [sess.run([loss, train], {x: xs[i::3], y: ys[i::3]})[0] for i in range(3)]
        return losses, sess.run([w, b])


def test_distributed_optimizer_one_rank_is_the_wrapped_optimizer(fresh_graph):
    hvd.init()
    assert (hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size()) == (0, 1, 0, 1)
    want = _mlp_step(False, fresh_graph)
    with tf.Graph().as_default() as g:
        got = _mlp_step(True, g)
        fused = [op for op in g.get_operations() if op.type == "hvd_allreduce"]
        assert len(fused) == 1 and fused[0].inputs[0].shape.as_list() == [5 * 3 + 3]  # one fused buffer
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_split_entry_puts_the_update_after_the_allreduce(fresh_graph):
    x = tf.placeholder(tf.float32, [None, 4], name="x")
    w = tf.get_variable("w", [4, 2])
    loss = tf.reduce_mean(tf.square(tf.matmul(x, w)), name="loss")
    train = hvd.DistributedOptimizer(tf.train.GradientDescentOptimizer(0.1)).minimize(loss)
    [(g_fetch, g_targets, g_feeds)], (a_fetch, a_targets, a_feeds), record = split_entry(
        fresh_graph, [loss], [train], [x])
    assert g_targets == [] and g_feeds == [x] and loss in g_fetch
    reduce = record["reduce"][0]
    assert reduce["op"] == "average" and reduce["input"] in [t.name for t in g_fetch]
    assert [t.name for t in a_feeds] == [reduce["output"]] and a_targets == [train] and a_fetch == []
    assert split_entry(fresh_graph, [loss], [], [x]) is None


def test_split_entries_only_train(fresh_graph):
    from compiler.distributed_entries import split_entries
    from compiler.model_file import EntryPoint

    x = tf.placeholder(tf.float32, [None, 3], name="x")
    w = tf.get_variable("w", [3, 1])
    loss = tf.reduce_mean(tf.matmul(x, w), name="loss")
    train = hvd.DistributedOptimizer(tf.train.GradientDescentOptimizer(0.1)).minimize(loss)
    entries = {"train": EntryPoint("train", [x], {"loss": loss}, [train]),
               "eval": EntryPoint("eval", [x], {"loss": loss})}
    functions, record = split_entries(fresh_graph, entries)
    assert sorted(functions) == ["eval", "train_apply", "train_grads"]
    assert record["grads"] == "train_grads" and record["early"] == ["loss:0"]
    entries["eval"] = EntryPoint("eval", [x], {"loss": hvd.allreduce(loss)})
    with pytest.raises(ValueError, match="only the 'train' entry"):
        split_entries(fresh_graph, entries)


def test_fusion_groups_last_layers_first(fresh_graph):
    grads = [tf.zeros([10, 10]), None, tf.zeros([10]), tf.zeros([5, 10]), tf.zeros([30])]
    assert hvd.fusion_groups(grads, 1) == [[0, 2, 3, 4]]
    # a gradient joins the group its middle element falls in (190 elements: 0-94 | 95-189)
    assert hvd.fusion_groups(grads, 2) == [[2, 3, 4], [0]]  # 10+50+30 | 100 elements
    assert hvd.fusion_groups(grads, 9) == [[4], [2, 3], [0]]  # at most 4 groups; none empty
    reduced = hvd.fused_allreduce(grads, num_groups=2)
    ops = [op for op in fresh_graph.get_operations() if op.type == "hvd_allreduce"]
    assert [op.attrs["group"] for op in ops] == [0, 1] and reduced[1] is None
    assert [op.inputs[0].shape.as_list() for op in ops] == [[90], [100]]


def test_horovod_api_errors():
    with pytest.raises(ValueError, match="supersedes average"):
        hvd.allreduce(tf.constant([1.0]), average=True, op=hvd.Sum)
    with pytest.raises(ValueError, match="scalar"):
        hvd.allgather(tf.constant(1.0))
    with pytest.raises(NotImplementedError, match="backward_passes_per_step"):
        hvd.DistributedOptimizer(tf.train.GradientDescentOptimizer(0.1), backward_passes_per_step=2)


# ----------------------------------------------------------------------------- 2 ranks
def _compare(got, want, rtol=2e-5, scale_tol=1e-4):
    """Equal within float32 reduction-order tolerance: relative, plus an absolute part
    relative to the array's largest value (elements near zero of long sums)."""
    assert sorted(got) == sorted(want)
    for key in want:
        atol = scale_tol * float(np.max(np.abs(want[key]), initial=0.0)) + 1e-7
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol, err_msg=key)


def test_horovod_program_two_ranks_match_one(tmp_path):
    """The TF1 + Horovod program: 2 ranks x half the batch == 1 process x the batch (SGD and
    Adam, MLP and the seed-002 CNN; interpreter, and the compiled Session for the MLP)."""
    mpi_kit.mpiexec_or_skip()
    configs = "mlp:sgd,mlp:adam,cnn:sgd,cnn:adam"
    one = mpi_kit.run([sys.executable, PROGRAM, "--configs", configs, "--steps", "2", "--out", tmp_path / "one.npz"])
    assert one.returncode == 0, one.stderr
    two = mpi_kit.ranks(2, [PROGRAM, "--configs", configs, "--steps", "2", "--out", tmp_path / "two.npz"])
    assert two.returncode == 0, two.stderr
    compiled = mpi_kit.ranks(2, [PROGRAM, "--configs", "mlp:adam", "--steps", "2", "--backend", "compiled",
                                 "--out", tmp_path / "compiled.npz"])
    assert compiled.returncode == 0, compiled.stderr
    want, got = dict(np.load(tmp_path / "one.npz")), dict(np.load(tmp_path / "two.npz"))
    assert want["mlp:adam/losses"].shape == (2,) and "cnn:sgd/conv_layer1/conv2d/kernel" in want
    # allgather (rank 1 sends two values), broadcast from the last rank, allreduce(Sum) of ranks
    assert got.pop("check/allgather").tolist() == [0, 1, 1] and want.pop("check/allgather").tolist() == [0]
    assert got.pop("check/broadcast").tolist() == [11] and want.pop("check/broadcast").tolist() == [10]
    assert got.pop("check/sum").tolist() == [1] and want.pop("check/sum").tolist() == [0]
    _compare(got, want)
    _compare({k: v for k, v in np.load(tmp_path / "compiled.npz").items() if not k.startswith("check/")},
             {k: v for k, v in want.items() if k.startswith("mlp:adam/")})


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The fixture MLP compiled with --distributed with SGD; with hvd.DistributedOptimizer
    (Adam) and no flag; without --distributed (one ``train`` entry) with SGD; and with SGD
    in 2 fusion groups."""
    mpi_kit.mpiexec_or_skip()
    root = tmp_path_factory.mktemp("dist")
    jobs = {}
    for name, flags in (("sgd", ["--distributed"]), ("adam", []), ("plain", []),
                        ("sgd2", ["--distributed", "--fusion-groups", "2"])):  # compiled side by side
        cmd = [sys.executable, "-m", "compiler.cli", "compile", MODEL, "-o", str(root / name), "--no-dump-ir", *flags]
        jobs[name] = subprocess.Popen(cmd, cwd=mpi_kit.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=mpi_kit.env(KILN_TEST_OPTIMIZER="hvd-adam" if name == "adam" else "sgd"))
    for name, job in jobs.items():
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err
    return {name: root / name for name in jobs}


def _train(artifact, tmp, tag, batch, workers=1, *more, epochs=2):
    res = mpi_kit.kiln("train", artifact, "--data", "digits", "--epochs", epochs, "--batch-size", batch,
                       "--ckpt-dir", tmp / f"ckpt-{tag}", "--run-dir", tmp / f"run-{tag}", "--no-progress",
                       "--workers", workers, *more)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in open(tmp / f"run-{tag}" / "metrics.jsonl")]
    values, _, meta = ck.load_checkpoint(ck.latest_checkpoint(tmp / f"ckpt-{tag}"))
    return res, rows, values, meta


@pytest.mark.parametrize("two, one", [("sgd", "sgd"), ("adam", "adam"), ("sgd2", "sgd")])
def test_kiln_train_two_workers_match_one(artifacts, tmp_path, two, one):
    """kiln train --workers 2 --batch-size 32 == one process --batch-size 64: every epoch's
    metrics (global means) and the final variables; only rank 0 wrote checkpoints/metrics.
    ``sgd2``: the backward pass in two stages, the first group's allreduce overlapping the
    second stage (same result as one fused buffer)."""
    _, rows1, vars1, _ = _train(artifacts[one], tmp_path, "one", 64)
    res, rows2, vars2, meta = _train(artifacts[two], tmp_path, "two", 32, 2)
    with open(os.path.join(artifacts[two], "manifest.json")) as f:
        assert "train_grads" in json.load(f)["entry_points"]  # adam: split by hvd.DistributedOptimizer
    assert res.stdout.count("kiln: trained to epoch 2/2") == 1  # rank 0 reports
    assert meta["steps"] == 2 * 26 and vars2["global_step"] == 52
    for a, b in zip(rows2, rows1):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    _compare(vars2, vars1)


def test_split_step_matches_the_single_train_entry(artifacts, tmp_path):
    """One process: train_grads + allreduce + train_apply == the plain train entry; the
    plain artifact refuses 2 workers, saying how to fix it."""
    _, rows_split, vars_split, _ = _train(artifacts["sgd"], tmp_path, "split", 64)
    _, rows_plain, vars_plain, _ = _train(artifacts["plain"], tmp_path, "plain", 64)
    assert [r["loss"] for r in rows_split] == pytest.approx([r["loss"] for r in rows_plain], rel=1e-6)
    _compare(vars_split, vars_plain, rtol=1e-6, scale_tol=1e-6)
    res = mpi_kit.kiln("train", artifacts["plain"], "--data", "digits", "--workers", 2, "--no-progress",
                       "--run-dir", tmp_path / "refused")
    assert res.returncode != 0
    assert "recompile" in res.stderr and "kiln compile --distributed" in res.stderr


def test_device_artifact_reduces_through_host_buffers(artifacts, tmp_path):
    """A CUDA artifact (built for Kiln's host emulator here) trains on 2 workers: its fetched
    gradient buffer is a host array, reduced like the CPU one; same result as the CPU step."""
    art = tmp_path / "cuda"
    res = mpi_kit.kiln("compile", MODEL, "-o", art, "--distributed", "--no-dump-ir", "--target", "cuda",
                       "--cuda-emulate")
    if res.returncode != 0 and "emulat" in res.stderr:
        pytest.skip(f"no CUDA emulator build here: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    _, rows_cpu, vars_cpu, _ = _train(artifacts["sgd"], tmp_path, "cpu", 64, epochs=1)
    _, rows_cuda, vars_cuda, _ = _train(art, tmp_path, "cuda", 32, 2, epochs=1)
    assert rows_cuda[0]["loss"] == pytest.approx(rows_cpu[0]["loss"], rel=1e-5)
    _compare(vars_cuda, vars_cpu)


def test_collective_timeout_aborts_with_the_rank(tmp_path):
    """A rank that never joins: the other ends the job after KILN_COLLECTIVE_TIMEOUT."""
    script = tmp_path / "stall.py"
    script.write_text("import time, numpy as np\nfrom runtime.collective import communicator\n"
                      "c = communicator()\nif c.rank == 1:\n    time.sleep(60)\n"
                      "c.allreduce(np.zeros(3, np.float32))\n")
    start = time.monotonic()
    res = mpi_kit.ranks(2, [str(script)], timeout=60, KILN_COLLECTIVE_TIMEOUT="2")
    assert time.monotonic() - start < 30
    assert res.returncode != 0
    assert "kiln: rank 0: allreduce of 3 float32 values timed out after 2 s" in res.stderr


def test_killed_rank_ends_the_job_and_resume_continues(artifacts, tmp_path):
    """Kill rank 1 mid-epoch: the job ends within a bound with a message; the newest
    checkpoint loads and --resume (2 workers again) continues from it."""
    ckpt = tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "compiler.cli", "train", str(artifacts["sgd"]), "--data", "digits",
           "--epochs", "50", "--batch-size", "4", "--ckpt-dir", str(ckpt), "--run-dir", str(tmp_path / "run"),
           "--no-progress", "--workers", "2"]
    job = subprocess.Popen(cmd, env=mpi_kit.env(KILN_COLLECTIVE_TIMEOUT="10"), cwd=mpi_kit.ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while ck.latest_checkpoint(ckpt) is None and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        victims = mpi_kit.rank_pids(job.pid, 1)
        assert victims and job.poll() is None, "no rank 1 to kill"
        os.kill(victims[0], signal.SIGKILL)
        killed = time.monotonic()
        out, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert time.monotonic() - killed < 30
    assert job.returncode != 0
    assert "kiln: the 2-worker job failed" in err, out + err
    latest = ck.latest_checkpoint(ckpt)
    _, _, meta = ck.load_checkpoint(latest)
    done = meta["epoch"]
    assert 1 <= done < 50
    res = mpi_kit.kiln("train", artifacts["sgd"], "--data", "digits", "--epochs", done + 1, "--batch-size", 4,
                       "--ckpt-dir", ckpt, "--run-dir", tmp_path / "run", "--no-progress", "--workers", 2,
                       "--resume")
    assert res.returncode == 0, res.stderr
    assert f"resumed from {latest} (epoch {done}," in res.stdout
    _, _, meta2 = ck.load_checkpoint(ck.latest_checkpoint(ckpt))
    assert meta2["epoch"] == done + 1 and meta2["steps"] > meta["steps"]


def test_rank_rng_steps_are_disjoint():
    from runtime.distributed import RANK_SHIFT, rank_rng_step

    assert int(rank_rng_step(np.int64(7), 0)) == 7
    steps = {int(rank_rng_step(np.int64(s), r)) for r in range(4) for s in (0, 1, 2**40)}
    assert len(steps) == 12 and int(rank_rng_step(np.int64(5), 3)) == 5 + (3 << RANK_SHIFT)
