"""Graphviz DOT text of an IR function, for ``kiln inspect --dot`` (no graphviz dependency).

One node per instruction (label: kind and result type), an edge from each operand's
producer, parameters as input nodes (feeds and state styled apart), state outputs and
fetches as sink nodes.  A ``fused`` instruction is drawn as ``subgraph cluster_N`` holding
its region's ops; edges go straight to and from the ops inside, so the data flow through a
fused kernel stays visible.  Render with ``dot -Tsvg step.dot -o step.svg``.
"""
from __future__ import annotations

from ..ir.function import Function

STYLES = {
    "feed": 'shape=invhouse, style=filled, fillcolor="#cfe2ff"',
    "state": 'shape=cylinder, style=filled, fillcolor="#fff3bf"',
    "fetch": 'shape=house, style=filled, fillcolor="#d3f9d8"',
    "state_out": 'shape=cylinder, style=filled, fillcolor="#ffd8a8"',
    "constant": 'shape=box, style="rounded,filled", fillcolor="#f1f3f5", fontcolor="#495057"',
    "op": 'shape=box, style=rounded',
}
CLUSTER_STYLE = 'style="rounded,filled"; fillcolor="#f8f0fc"; color="#9c36b5"'  # statements, not a list


def dot_quote(text: str) -> str:
    """A DOT string literal: backslashes and double quotes escaped, newlines as ``\\n``."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(*lines) -> str:
    return dot_quote("\n".join(str(x) for x in lines if x != ""))


def buffer_note(ins) -> str:
    """Where memory planning put the results: ``static@64``, ``batch@16*N``, ``in place: W``."""
    notes = []
    for buf in ins.buffers or ():
        if buf.space == "state":
            notes.append(f"in place: {buf.key}")
        else:
            notes.append(f"{buf.space}@{buf.offset}" + ("*N" if buf.space == "batch" else ""))
    return ", ".join(notes)


def constant_note(ins) -> str:
    """A scalar constant's value (bigger literals stay out of the picture)."""
    value = ins.attrs.get("value")
    if ins.kind == "constant" and getattr(value, "size", 0) == 1:
        return f"= {value.reshape(-1)[0]}"
    return ""


def fused_pattern(ins) -> str:
    """The fused kernel's pattern attr, or the kinds of its region ops joined by ``+``."""
    pattern = ins.attrs.get("pattern")
    if pattern:
        return str(pattern)
    return "+".join(op.kind for op in ins.region.body) if ins.region is not None else ins.kind


class _DotWriter:
    """Collects node, cluster and edge lines while walking one function."""

    def __init__(self, fn: Function):
        self.fn = fn
        self.node_of: dict = {}  # Value -> node id that produces it
        self.lines: list = []
        self.edges: list = []
        self.count = 0

    def new_node(self, label: str, style: str, indent: str = "  ") -> str:
        node = f"n{self.count}"
        self.count += 1
        self.lines.append(f"{indent}{node} [label={label}, {style}];")
        return node

    def connect(self, operands, node: str) -> None:
        for v in operands:
            source = self.node_of.get(v)
            if source is not None:
                self.edges.append(f"  {source} -> {node};")

    def params(self) -> None:
        for p in self.fn.params:
            self.node_of[p.value] = self.new_node(_label(f"{p.kind} {p.key}", p.value.type), STYLES[p.kind])

    def instr(self, ins, indent: str = "  ") -> None:
        """A plain op: one node, edges from its operands."""
        style = STYLES["constant" if ins.kind == "constant" else "op"]
        types = ", ".join(str(v.type) for v in ins.results)
        node = self.new_node(_label(ins.kind, types, constant_note(ins), buffer_note(ins)), style + f", tooltip={dot_quote(ins.loc)}", indent)
        self.connect(ins.operands, node)
        for v in ins.results:
            self.node_of[v] = node

    def fused(self, ins, cluster: int) -> None:
        """A fused op: a cluster of its region ops; region params alias the outer operands."""
        region = ins.region
        for inner, outer in zip(region.params, ins.operands):
            if outer in self.node_of:
                self.node_of[inner] = self.node_of[outer]
        results = ", ".join(str(v.type) for v in ins.results)
        self.lines.append(f"  subgraph cluster_{cluster} {{")
        title = f"fused #{cluster}: {fused_pattern(ins)}"
        self.lines.append(f"    label={_label(title, results, buffer_note(ins))};")
        self.lines.append(f"    {CLUSTER_STYLE};")
        for op in region.body:
            self.instr(op, indent="    ")
        self.lines.append("  }")
        for inner, outer in zip(region.yields, ins.results):
            if inner in self.node_of:
                self.node_of[outer] = self.node_of[inner]

    def outputs(self) -> None:
        for kind, items in (("state_out", self.fn.state_out), ("fetch", self.fn.fetches)):
            for key, v in items:
                title = f"state' {key}" if kind == "state_out" else f"fetch {key}"
                node = self.new_node(_label(title, v.type), STYLES[kind])
                self.connect([v], node)

    def render(self) -> str:
        self.params()
        clusters = 0
        for ins in self.fn.body:
            if ins.kind == "fused":
                self.fused(ins, clusters)
                clusters += 1
            else:
                self.instr(ins)
        self.outputs()
        head = [f"digraph {dot_quote(self.fn.name)} {{", "  rankdir=TB;",
                '  graph [fontname="monospace", fontsize=10];', '  node [fontname="monospace", fontsize=10];', '  edge [color="#868e96"];']
        return "\n".join(head + self.lines + self.edges + ["}"]) + "\n"


def to_dot(fn: Function) -> str:
    """The DOT text of ``fn`` (a ``digraph`` named after the function)."""
    return _DotWriter(fn).render()
