"""Launch plans for a kernel's top-level statements (part of the scheduling pass, schedule.py).

``launch_groups(body, buffers)`` splits a kernel body into the launches of a device with
grids of cooperating thread blocks (kernel_ir ``Launch`` nodes), in order:

* ``K.Gemm``: the tiled GEMM;
* ``Grid``: threads over the flattened iteration space of the ``par`` loops of a loop nest.
  A nest is a chain of levels ``[pure Lets..., For]`` (the Lets are recomputed by every
  thread); a loop joins ``par`` when its bounds are free of loop variables and either the
  loops above it are all flagged ``parallel``/``vectorize`` (the IR's promise), or
  ``footprint.separating`` proves that its iterations touch disjoint elements (then the
  loops it skips stay sequential inside the thread, in their original order).  A flagged
  loop whose body holds several loops is first split into one loop per statement
  (``fission``: its iterations are independent, so all first statements may run before
  all second ones);
* ``BlockReduce``: one block per output (the ``par`` loops), the block's threads stride over
  the reduced loops ``red``; partial accumulators combine over the block and one thread
  runs ``tail``.  Two shapes qualify when the reduced trip count is large (``RED_MIN_TRIP``
  or growing with N): ``DeclareAcc; For(reduced) {Accumulate}; tail`` under the parallel
  loops or at the top level (a full reduction), and a nest whose innermost body updates
  ``b[E] = combine(b[E], v)`` with ``E`` free of the reduced loops (the bias-gradient shape:
  init loop, then rows outside, columns inside; with ``GRID_FILL`` columns or more, a
  ``Grid`` over the columns instead).  The sum is reassociated: it differs from the
  sequential one by rounding only;
* ``Ordered``: a loop holding a ``Check`` that is not flagged (the CPU semantics: the
  first failing iteration in loop order reports its value, and nothing after it runs):
  when its bounds are free of loop variables and its iterations are independent (nothing
  written, or ``footprint.separating`` proves the stores disjoint), the leading rectangular
  loops of its nest are flattened and run by one block in chunks of its threads, stopping
  at the chunk holding the smallest failing flat index, which is the first failing
  iteration in loop order;
* ``Serial``: everything else, one thread.

Flagged loops whose body holds a ``Check`` are parallel through their flags (a ``Grid``;
a failed check stops its thread, other iterations still run, as on the CPU backend's
threads); unflagged ones are ``Ordered`` or ``Serial``.  For a target that threads one loop
in place, ``independent_loops`` names the loops of a nest that may each be threaded alone.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from . import kernel_ir as K
from .combine import combine_of_op, combine_op, identity
from .footprint import accesses, separating, stmt_list, var_names, walk
from .kernel_walk import iter_exprs as sub_exprs
from .kernel_walk import static_trip, stmt_exprs

RED_MIN_TRIP = 256  # reduced iterations from which a reduction gets a thread block
GRID_FILL = 16384  # outputs from which a column reduction runs a thread per column instead


@dataclass
class Level:
    loop: K.For
    lets: list  # between this loop and the next level's loop


# ----------------------------------------------------------------------------- structure
def free_vars(e) -> set:
    """Variables, loads and random draws an expression depends on (markers ``<load>``...)."""
    out = set()
    for x in sub_exprs(e):
        if isinstance(x, K.Var):
            out.add(x.name)
        elif isinstance(x, (K.Load, K.Random)):
            out.add(f"<{type(x).__name__.lower()}>")
    return out


def rectangular(loop) -> bool:
    """Bounds free of loop variables, lets and loads (``Batch()`` is fine)."""
    return not (free_vars(loop.start) | free_vars(loop.stop))


def flagged(loop) -> bool:
    return loop.parallel or loop.vectorize


def nest(loop) -> tuple:
    """``(levels, body)``: the chain of ``[Lets..., For]`` levels from ``loop`` down, and the
    statements of the innermost level's body."""
    levels = []
    while True:
        stmts = stmt_list(loop.body)
        n = 0
        while n < len(stmts) and isinstance(stmts[n], K.Let):
            n += 1
        if n == len(stmts) - 1 and isinstance(stmts[n], K.For):
            levels.append(Level(loop, stmts[:n]))
            loop = stmts[n]
            continue
        levels.append(Level(loop, []))
        return levels, stmts


def large(loops) -> bool:
    trip = static_trip(loops)
    return trip is None or trip >= RED_MIN_TRIP


def _decl_bytes(decl) -> tuple:
    size = decl.dtype.np.itemsize
    for d in decl.shape:
        size *= getattr(d, "coef", d)
    return decl.offset, decl.offset + size


def inferable(tree, buffers, checks=False) -> bool:
    """Whether loop independence may be inferred from the accesses: no ``Check`` (unless
    ``checks``: the caller keeps the loop order of failures) and no two buffers (one of them
    written) sharing workspace memory."""
    if any(isinstance(s, K.Gemm) or (isinstance(s, K.Check) and not checks) for s, _ in walk(tree)):
        return False
    acc = accesses(tree)
    written = {a.buffer for a in acc if a.store}
    names = sorted({a.buffer for a in acc})
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            da, db = buffers[a], buffers[b]
            if (a in written or b in written) and da.role in ("arena", "scratch") and \
                    (da.role, da.space) == (db.role, db.space):
                (a0, a1), (b0, b1) = _decl_bytes(da), _decl_bytes(db)
                if a0 < b1 and b0 < a1:
                    return False
    return True


# ----------------------------------------------------------------------------- plans
def fission(loop) -> list:
    """A flagged loop whose body holds loops and other statements, as one loop per loop
    statement (runs of other statements together); lets are copied into every piece."""
    if not (flagged(loop) and rectangular(loop)):
        return [loop]
    stmts = stmt_list(loop.body)
    written = {a.buffer for a in accesses(stmts) if a.store}
    if any(isinstance(s, (K.DeclareAcc, K.Accumulate)) for s in stmts) or any(
            isinstance(s, K.Let) and any(a.buffer in written for a in accesses(s)) for s in stmts):
        return [loop]  # shared accumulators, or lets whose loads a piece may overwrite
    pieces, run, lets = [], [], []
    for s in stmts:
        if isinstance(s, K.Let):
            lets.append(s)
            if run:
                run.append(s)
        elif isinstance(s, K.For):
            if run:
                pieces.append(run)
                run = []
            pieces += [lets + [inner] for inner in fission(s)]
        else:
            run = run or list(lets)
            run.append(s)
    if run:
        pieces.append(run)
    if len(pieces) <= 1:
        return [loop]
    return [replace(loop, body=K.Block(p)) for p in pieces]


def plan_loop(loop, buffers):
    """A ``Grid``, ``BlockReduce`` or ``Ordered`` plan for one top-level loop, or None (it
    stays serial)."""
    levels, body = nest(loop)
    loops = [lv.loop for lv in levels]
    infer = inferable(loop, buffers)
    par = _parallel_loops(loop, loops, infer)
    if not par:
        return ordered(loop, buffers)
    if infer:
        plan = _reduce_updates(loop, levels, body, par)
        if plan is None and par == {f.var.name for f in loops}:
            plan = _reduce_accs(loop, loops, _lets(levels), body, buffers)
        if plan is not None:
            return plan
    return K.Grid([f for f in loops if f.var.name in par], _thread_body(levels, body, par))


def ordered(loop, buffers):
    """An ``Ordered`` plan for an unflagged loop holding a ``Check``, or None: its leading
    rectangular loops (the longest prefix whose iterations provably touch disjoint
    elements) become one flat, ordered iteration space; a thread runs the rest in order."""
    if not rectangular(loop) or not any(isinstance(s, K.Check) for s, _ in walk(loop)):
        return None
    if not inferable(loop, buffers, checks=True):
        return None
    levels, body = nest(loop)
    loops = []
    for lv in levels:
        if not rectangular(lv.loop):
            break
        loops.append(lv.loop)
    written = {a.buffer for a in accesses(loop) if a.store}
    while loops and written:
        names = {f.var.name for f in loops}
        if separating(loop, written, names) == names:
            break
        loops.pop()
    if not loops:
        return None
    thread = _thread_body(levels, body, {f.var.name for f in loops})
    declared = {s.var.name for s, _ in walk(thread) if isinstance(s, K.DeclareAcc)}
    if any(isinstance(s, K.Accumulate) and s.var.name not in declared for s, _ in walk(thread)):
        return None  # state carried from one iteration to the next
    return K.Ordered(loops, thread)


def _flagged_prefix(loops) -> set:
    """Names of the leading rectangular loops flagged ``parallel``/``vectorize``."""
    prefix = set()
    for f in loops:
        if not (flagged(f) and rectangular(f)):
            break
        prefix.add(f.var.name)
    return prefix


def _parallel_loops(loop, loops, infer) -> set:
    """Names of the nest's loops whose iterations may run on different threads: the leading
    flagged loops, or (when ``infer``) the loops whose iterations provably touch disjoint
    elements, if those include the flagged ones."""
    prefix = _flagged_prefix(loops)
    if not infer:
        return prefix
    written = {a.buffer for a in accesses(loop) if a.store}
    proven = separating(loop, written, {f.var.name for f in loops if rectangular(f)})
    return proven if proven >= prefix or not prefix else prefix


def independent_loops(loop, buffers) -> list:
    """The loops of ``loop``'s nest, outermost first, each of which may run its iterations on
    different threads while the other loops stay sequential: the leading flagged loops, and
    every rectangular loop whose iterations alone provably touch disjoint elements."""
    loops = [lv.loop for lv in nest(loop)[0]]
    prefix = _flagged_prefix(loops)
    if not inferable(loop, buffers):
        return [f for f in loops if f.var.name in prefix]
    written = {a.buffer for a in accesses(loop) if a.store}
    return [f for f in loops if f.var.name in prefix
            or (rectangular(f) and separating(loop, written, {f.var.name}))]


def _lets(levels) -> list:
    return [s for lv in levels for s in lv.lets]


def _thread_body(levels, body, par) -> list:
    """The nest without the ``par`` loops (their lets stay in place)."""
    out = list(body)
    for lv in reversed(levels):
        if lv.loop.var.name in par:
            out = lv.lets + out
        else:
            out = [replace(lv.loop, body=K.Block(lv.lets + out))]
    return out


def rmw(s):
    """``(combine, value)`` when ``s`` is ``b[E] = op(b[E], value)`` (either operand order)."""
    if not (isinstance(s, K.Store) and isinstance(s.value, K.Op) and combine_of_op(s.value.kind)):
        return None
    old = K.Load(s.buffer, s.index, s.value.dtype)
    a, b = s.value.args
    other = b if a == old else (a if b == old else None)
    if other is None or any(isinstance(x, K.Load) and x.buffer == s.buffer for x in sub_exprs(other)):
        return None
    return combine_of_op(s.value.kind), other


def _reduce_updates(loop, levels, body, par):
    """The bias-gradient shape: innermost updates ``b[E] = combine(b[E], v)`` with ``E`` over
    the ``par`` loops only; the other loops of the nest are reduced by a block."""
    loops = [lv.loop for lv in levels]
    red = [f for f in loops if f.var.name not in par]
    outs = static_trip([f for f in loops if f.var.name in par])
    if not red or not all(rectangular(f) for f in red) or not large(red) or (outs or 0) >= GRID_FILL:
        return None  # (enough columns: a thread each, reading rows coalesced)
    updates = {}
    for s in body:
        hit = rmw(s)
        if hit and not (free_vars(s.index) - par) and s.buffer not in updates:
            updates[s.buffer] = (s, hit)
    if not updates:
        return None
    acc = accesses(loop)
    for name, (s, _) in updates.items():
        if sum(a.buffer == name for a in acc) != 2:  # the update's own load and store only
            return None
    others = {a.buffer for a in acc if a.store} - set(updates)
    every = {f.var.name for f in loops}
    if others and separating(loop, others, every) != every:
        return None
    reducers, new_body, tail = [], [], []
    for s in body:
        if isinstance(s, K.Store) and s.buffer in updates and updates[s.buffer][0] is s:
            combine, value = updates[s.buffer][1]
            var = K.Var(f"kiln_red{len(reducers)}", s.value.dtype)
            reducers.append((var, combine))
            new_body.append(K.Accumulate(var, combine, value))
            tail.append(K.Store(s.buffer, s.index, K.Op(combine_op(combine), (K.Load(s.buffer, s.index, var.dtype), var),
                                                         var.dtype)))
        else:
            new_body.append(s)
    head = [K.DeclareAcc(v, identity(c, v.dtype)) for v, c in reducers]
    return K.BlockReduce([f for f in loops if f.var.name in par], head, red, _lets(levels) + new_body, reducers, tail)


def _reduce_accs(tree, par, lets, body, buffers):
    """``[Lets/DeclareAccs...] For(reduced) {... Accumulate ...} tail`` as a block reduction
    (``par``: the loops around it, all parallel; ``lets``: theirs)."""
    n = 0
    while n < len(body) and isinstance(body[n], (K.Let, K.DeclareAcc)):
        n += 1
    if n == len(body) or not isinstance(body[n], K.For):
        return None
    pre, red_for, tail = body[:n], body[n], body[n + 1:]
    levels, red_body = nest(red_for)
    red = [lv.loop for lv in levels]
    if not all(rectangular(f) for f in red) or not large(red) or not inferable(red_for, buffers):
        return None
    accs = {s.var.name: s for s in pre if isinstance(s, K.DeclareAcc)}
    combines = {}
    for s, _ in walk(red_for):
        if isinstance(s, K.Accumulate) and s.var.name in accs:
            if combines.setdefault(s.var.name, s.combine) != s.combine:
                return None
    if not combines:
        return None
    used = set().union(*(var_names(e) for s, _ in walk(red_for) for e in stmt_exprs(s)))
    used |= set().union(*(var_names(s.value) for s in pre if isinstance(s, K.Let)))
    if used & set(combines) or any(free_vars(accs[a].init) & {"<load>"} for a in combines):
        return None
    written = {a.buffer for a in accesses(red_for) if a.store}
    every = {f.var.name for f in par + red}
    if written and separating(tree, written, every) != every:
        return None
    head = list(lets) + [K.DeclareAcc(s.var, identity(combines[s.var.name], s.var.dtype))
                         if isinstance(s, K.DeclareAcc) and s.var.name in combines else s for s in pre]
    reducers = [(accs[a].var, c) for a, c in combines.items()]
    finish = [K.Accumulate(accs[a].var, c, accs[a].init) for a, c in combines.items()]
    return K.BlockReduce(par, head, red, _lets(levels) + red_body, reducers, finish + tail)


def launch_groups(body, buffers) -> list:
    """The launches of one kernel body (its top-level statements), in order (see the module
    docstring).  A body with top-level lets or accumulators is one launch (a ``Gemm`` among
    them stays inside its ``Serial``: the renderer decides whether it can run it there)."""
    if any(isinstance(s, (K.Let, K.DeclareAcc)) for s in body):
        plan = None if any(isinstance(s, K.Gemm) for s in body) else \
            _reduce_accs(K.Block(list(body)), [], [], list(body), buffers)
        return [plan or K.Serial(list(body))]
    groups, run = [], []
    for s in body:
        plans = [s] if isinstance(s, K.Gemm) else []
        if isinstance(s, K.For):
            plans = [(piece, plan_loop(piece, buffers)) for piece in fission(s)]
            plans = [p if p is not None else piece for piece, p in plans]
        for p in plans or [s]:
            if isinstance(p, (K.Launch, K.Gemm)):
                if run:
                    groups.append(K.Serial(run))
                    run = []
                groups.append(p)
            else:
                run.append(p)
    if run:
        groups.append(K.Serial(run))
    return groups
