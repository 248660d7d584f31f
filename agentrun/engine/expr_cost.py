"""A bound on what evaluating a CEL expression costs, checked before it runs.

The CEL library evaluates on the event loop and holds the GIL: an expression such as
`input.l.filter(x, x in input.l)` over 10,000 integers runs for seconds and every RPC waits.
The library has no cost tracking, so this module estimates an upper bound from the compiled
expression's structure and the sizes of the values it will touch (the actual values in the
activation: `input.l` is measured, not guessed), and the evaluation is refused when the bound
is over the limit.

Units: one unit is about one element copied or compared by the library (~100-500 ns); text
counts 64 bytes per unit (memcpy). The model, measured on the library (0.10):
- `a + b` copies both sides; `==`, `<`, `contains`, ... read both sides;
- `x in l` compares `x` with each element of `l`;
- `matches` compiles and runs a regular expression: pattern size times text size;
- `map` and `filter` append one element at a time by list concatenation, so over n elements
  they copy n²/2 elements besides running their body n times;
- the result is converted to Python values: its size once more.
The bound only needs to be an upper bound: sizes of values built at run time are bounded from
the sizes of what they are built from, an element by the largest element of its collection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, TypeAlias

# The default cost limit: the costliest evaluations it allows took 4-25 ms on a heavily loaded
# 2-core machine (a map over ~440 elements, exists over 10,000; docs/runtime.md).
DEFAULT_COST_LIMIT = 100_000
TEXT_BYTES_PER_UNIT = 64
INF = math.inf

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>//[^\n]*)
      | (?P<str>(?:[bB][rR]?|[rR][bB]?)?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
      | (?P<num>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d+|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>&&|\|\||==|!=|<=|>=|[<>!+\-*/%.()\[\]{},?:])
    )""",
    re.VERBOSE | re.DOTALL,
)

# AST nodes are tuples: ("lit", size, value | None) ("id", name) ("sel", operand, field) ("idx", operand,
# index) ("call", name, target | None, args) ("op", name, args) ("list", items)
# ("map", [(key, value)]) ("cond", test, a, b) ("comp", macro, range, var, args)
# Typed loosely: the first item says the shape, and the walkers match on it.
Node: TypeAlias = tuple[Any, ...]


class Unparsed(Exception):
    """The estimator's parser does not know this syntax; the caller uses a cruder bound."""


def parse(source: str) -> Node:
    """The AST of a CEL expression the library has already parsed successfully."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = source.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise Unparsed(text[pos : pos + 10])
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        if kind != "comment":
            tokens.append((kind, m.group(kind)))
    parser = _Parser(tokens)
    try:
        node = parser.expr()
    except (IndexError, RecursionError):
        raise Unparsed("end") from None
    if parser.pos != len(tokens):
        raise Unparsed(tokens[parser.pos][1])
    return node


_SIMPLE_STRING = re.compile(r"'[^'\\]*'|\"[^\"\\]*\"")
_REL = frozenset({"<", "<=", ">", ">=", "==", "!="})


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.t = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.t[self.pos][1] if self.pos < len(self.t) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.t[self.pos]
        if value is not None and tok[1] != value:
            raise Unparsed(f"expected {value}")
        self.pos += 1
        return tok

    def expr(self) -> Node:
        test = self.binary(0)
        if self.peek() == "?":
            self.take()
            a = self.binary(0)
            self.take(":")
            return ("cond", test, a, self.expr())
        return test

    _LEVELS: tuple[frozenset[str], ...] = (
        frozenset({"||"}),
        frozenset({"&&"}),
        _REL | {"in"},
        frozenset({"+", "-"}),
        frozenset({"*", "/", "%"}),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        ops = self._LEVELS[level]
        while self.peek() in ops and not (self.peek() == "in" and self.t[self.pos][0] != "name"):
            op = self.take()[1]
            left = ("op", op, [left, self.binary(level + 1)])
        return left

    def unary(self) -> Node:
        if self.peek() in ("!", "-"):
            op = self.take()[1]
            return ("op", "u" + op, [self.unary()])
        return self.member()

    def args(self, close: str) -> list[Node]:
        out: list[Node] = []
        while self.peek() != close:
            out.append(self.expr())
            if self.peek() == ",":
                self.take()
            elif self.peek() != close:
                raise Unparsed(f"expected {close}")
        self.take(close)
        return out

    def member(self) -> Node:
        node = self.primary()
        while True:
            tok = self.peek()
            if tok == ".":
                self.take()
                kind, name = self.take()
                if kind != "name":
                    raise Unparsed(name)
                if self.peek() == "(":
                    self.take()
                    node = self._call(name, node, self.args(")"))
                else:
                    node = ("sel", node, name)
            elif tok == "[":
                self.take()
                index = self.expr()
                self.take("]")
                node = ("idx", node, index)
            elif tok == "{":  # message construction: not used by agentrun, cost as a map
                self.take()
                node = ("map", self._fields())
            else:
                return node

    def _call(self, name: str, target: Node | None, args: list[Node]) -> Node:
        if target is not None and name in _MACROS and args and args[0][0] == "id":
            return ("comp", name, target, args[0][1], args[1:])
        return ("call", name, target, args)

    def _fields(self) -> list[tuple[Node, Node]]:
        out: list[tuple[Node, Node]] = []
        while self.peek() != "}":
            key = self.expr()
            self.take(":")
            out.append((key, self.expr()))
            if self.peek() == ",":
                self.take()
        self.take("}")
        return out

    def primary(self) -> Node:
        kind, text = self.take()
        if kind == "str":
            return (
                "lit",
                1 + len(text) / TEXT_BYTES_PER_UNIT,
                _SIMPLE_STRING.fullmatch(text) and text[1:-1],
            )
        if kind == "num":
            return ("lit", 1, int(text) if text.isdigit() else None)
        if kind == "name":
            if text in ("true", "false", "null"):
                return ("lit", 1, None)
            if self.peek() == "(":
                self.take()
                return self._call(text, None, self.args(")"))
            return ("id", text)
        if text == ".":  # a leading dot: root scope
            return self.primary()
        if text == "(":
            node = self.expr()
            self.take(")")
            return node
        if text == "[":
            return ("list", self.args("]"))
        if text == "{":
            return ("map", self._fields())
        raise Unparsed(text)


class Shape:
    """An upper bound on a value: total size in units, element count, largest element."""

    __slots__ = ("concrete", "count", "elem", "size", "value")

    def __init__(self, size: float, count: float = 0, elem: float = 0) -> None:
        self.size = size
        self.count = count
        self.elem = elem
        self.value: Any = None
        self.concrete = False


SCALAR = Shape(1)


_SCALARS = (int, float, bool, type(None))


class _Measure:
    """Sizes of the actual values, measured once per value and evaluation, and at most up to
    the limit: the walk that measures is bounded too."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.seen: dict[int, Shape] = {}

    def of(self, value: Any) -> Shape:
        known = self.seen.get(id(value))
        if known is not None:
            return known
        if isinstance(value, (list, tuple, dict)):
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            largest = 0.0
            total = 1.0 + len(value)
            for item in items:
                t = type(item)
                if t in _SCALARS:
                    size = 1.0
                elif t is str or t is bytes:
                    size = 1 + len(item) / TEXT_BYTES_PER_UNIT
                else:
                    size = self.of(item).size
                total += size
                largest = max(largest, size)
                if total > self.cap:
                    total = largest = INF
                    break
            shape = Shape(total, len(value), largest)
        elif isinstance(value, (str, bytes, bytearray)):
            shape = Shape(1 + len(value) / TEXT_BYTES_PER_UNIT)
        else:
            shape = Shape(1)
        shape.value = value
        shape.concrete = True
        self.seen[id(value)] = shape
        return shape


def _elem(shape: Shape) -> Shape:
    return Shape(shape.elem, shape.elem, shape.elem)


def _child(shape: Shape, key: Any) -> Shape | None:
    """The actual element when the value is known and holds `key`."""
    if not shape.concrete:
        return None
    value = shape.value
    if isinstance(value, dict) and isinstance(key, str) and key in value:
        return _known(value[key])
    if isinstance(value, list) and type(key) is int and -len(value) <= key < len(value):
        return _known(value[key])
    return None


def _known(value: Any) -> Shape:
    """A known value whose size is measured only when an operation needs it (size -1)."""
    shape = Shape(-1)
    shape.value = value
    shape.concrete = True
    return shape


def estimate(node: Node, activation: Mapping[str, Any], limit: float) -> float:
    """An upper bound on the cost of evaluating `node` over `activation`, in units.

    Stops early (returning more than `limit`) once the bound passes `limit`."""
    est = _Estimator(activation, limit)
    cost, shape = est.run(node, {})
    return cost + est.size(shape).size


class _Estimator:
    def __init__(self, activation: Mapping[str, Any], limit: float) -> None:
        self.act = activation
        self.limit = limit
        self.measure = _Measure(limit)

    def size(self, shape: Shape) -> Shape:
        if shape.concrete and shape.size < 0:
            measured = self.measure.of(shape.value)
            shape.size, shape.count, shape.elem = measured.size, measured.count, measured.elem
        return shape

    def run(self, node: Node, env: dict[str, Shape]) -> tuple[float, Shape]:
        kind = node[0]
        if kind == "lit":
            if node[2] is not None:
                shape = _known(node[2])
                shape.size = node[1]
                return 1, shape
            return 1, Shape(node[1])
        if kind == "id":
            name = node[1]
            if name in env:
                return 1, env[name]
            if name in self.act:
                return 1, _known(self.act[name])
            return 1, SCALAR
        if kind == "sel":
            cost, base = self.run(node[1], env)
            child = _child(base, node[2])
            return cost + 1, child if child is not None else _elem(self.size(base))
        if kind == "idx":
            cost, base = self.run(node[1], env)
            icost, index = self.run(node[2], env)
            child = _child(base, index.value) if index.concrete else None
            return cost + icost + 1, child if child is not None else _elem(self.size(base))
        if kind == "list" or kind == "map":
            parts = node[1] if kind == "list" else [p for kv in node[1] for p in kv]
            cost, total, largest = float(len(parts) + 1), 1.0 + len(parts), 0.0
            for part in parts:
                c, s = self.run(part, env)
                s = self.size(s)
                cost += c
                total += s.size
                largest = max(largest, s.size)
            return cost, Shape(total, len(node[1]), largest)
        if kind == "cond":
            cost = 0.0
            shapes = []
            for part in node[1:]:
                c, s = self.run(part, env)
                cost += c
                shapes.append(self.size(s))
            a, b = shapes[1], shapes[2]
            return cost, Shape(max(a.size, b.size), max(a.count, b.count), max(a.elem, b.elem))
        if kind == "op":
            return self._op(node[1], node[2], env)
        if kind == "call":
            return self._call(node[1], node[2], node[3], env)
        if kind == "comp":
            return self._comprehension(node[1], node[2], node[3], node[4], env)
        raise AssertionError(kind)

    def _op(self, op: str, args: list[Node], env: dict[str, Shape]) -> tuple[float, Shape]:
        cost = 0.0
        shapes = []
        for arg in args:
            c, s = self.run(arg, env)
            cost += c
            shapes.append(s)
        if op in ("&&", "||", "u!", "u-", "-", "*", "/", "%"):
            return cost + 1, SCALAR
        a, b = self.size(shapes[0]), self.size(shapes[1])
        if op == "+":
            return cost + a.size + b.size, Shape(
                a.size + b.size, a.count + b.count, max(a.elem, b.elem)
            )
        if op == "in":
            return cost + b.size + b.count * min(a.size, b.elem), SCALAR
        return cost + a.size + b.size, SCALAR  # comparisons read both sides

    def _call(
        self, name: str, target: Node | None, args: list[Node], env: dict[str, Shape]
    ) -> tuple[float, Shape]:
        cost = 1.0
        shapes = []
        for arg in ([target] if target is not None else []) + args:
            c, s = self.run(arg, env)
            cost += c
            shapes.append(s)
        if name == "has":
            return cost, SCALAR
        if (
            name == "size"
            and shapes
            and shapes[0].concrete
            and isinstance(shapes[0].value, (list, dict))
        ):
            return cost, SCALAR
        sized = [self.size(s) for s in shapes]
        read = sum(s.size for s in sized)
        if name == "matches" and len(sized) == 2:
            return cost + sized[0].size * sized[1].size, SCALAR
        if name == "dyn" and sized:
            return cost, sized[0]
        if name in ("string", "bytes") and sized:
            return cost + read, Shape(max(sized[0].size, 2))
        return cost + read, SCALAR

    def _comprehension(
        self, macro: str, target: Node, var: str, args: list[Node], env: dict[str, Shape]
    ) -> tuple[float, Shape]:
        cost, rng = self.run(target, env)
        rng = self.size(rng)
        n = rng.count
        inner = {**env, var: _elem(rng)}
        body_cost, body = 0.0, SCALAR
        for arg in args:
            c, body = self.run(arg, inner)
            body_cost += c
        body = self.size(body)
        cost += n * (body_cost + 1)
        if macro == "map":
            return cost + n * n / 2, Shape(1 + n + n * body.size, n, body.size)
        if macro == "filter":
            return cost + n * n / 2, rng
        return cost, SCALAR


def crude(source: str, activation: Mapping[str, Any], limit: float) -> float:
    """A bound for syntax `parse` does not know: every operator may touch everything."""
    measure = _Measure(limit)
    total = sum(measure.of(v).size for v in activation.values())
    ops = len(re.findall(r"[-+*/%<>=!&|.\[(]", source)) + 1
    comprehension = re.search(r"\.\s*(all|exists_one|exists|map|filter)\s*\(", source)
    return ops * total * (total if comprehension else 1)


_FLAT_OPS = frozenset({"&&", "||", "u!", "u-", "-", "*", "/", "%"})


def is_flat(node: Node) -> bool:
    """True when nothing in `node` costs more than a constant: names, fields, literal indexes,
    logic and number arithmetic. Its evaluation reads and returns existing values (the result's
    conversion is linear in data the size limits already bound), so it needs no estimate."""
    kind = node[0]
    if kind in ("lit", "id"):
        return True
    if kind == "sel":
        return is_flat(node[1])
    if kind == "idx":
        return node[2][0] == "lit" and is_flat(node[1])
    if kind == "cond":
        return all(is_flat(part) for part in node[1:])
    if kind == "op":
        return node[1] in _FLAT_OPS and all(is_flat(arg) for arg in node[2])
    if kind == "call":
        return node[1] == "has" and node[2] is None and all(is_flat(arg) for arg in node[3])
    return False
