"""A fast path for the simple CEL expressions state machines are full of.

Guards such as `${{ data.count < 3 }}` or `${{ event.data.amount >= input.total && !data.paid }}`
are evaluated by thousands of events per second. Crossing into the CEL library costs a few
microseconds per call (converting the activation into CEL values); a Python closure over the
same JSON values costs a fraction of that.

The closures cover a small subset: literals, names, member and index access, `!`, unary `-`,
`&&`, `||`, comparisons, and `+ - *` on numbers (and `+` on strings). They are exact only where
CEL and Python agree: same-typed scalars, present keys, no overflow. Anything else (a missing
key, mixed int and double, a list compared, a number out of int64) raises `Fallback` during
evaluation, and the caller evaluates the whole expression with the CEL library instead. So the
fast path never decides a case differently from CEL: it only decides the clean cases sooner.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Fallback", "compile_fast"]

Fn = Callable[[Mapping[str, Any]], Any]


def _constant(value: Any) -> Fn:
    return lambda act: value


_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_MAX_TEXT = 4096
_MAX_OPS = 16
_WORK_OPS = frozenset({"==", "!=", "<", "<=", ">", ">=", "+", "-", "*"})

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<float>\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
      | (?P<int>\d+)(?![\w.])
      | (?P<str>"[^"\\\n]*"|'[^'\\\n]*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>&&|\|\||==|!=|<=|>=|[<>!+\-*.()\[\]])
    )""",
    re.VERBOSE,
)


class Fallback(Exception):
    """The fast path cannot decide this evaluation exactly; ask CEL."""


class _Unsupported(Exception):
    pass


def _tokens(source: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = source.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _Unsupported(text[pos:])
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], names: frozenset[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.names = names

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise _Unsupported(value or "end")
        self.pos += 1
        return tok

    def parse(self) -> Fn:
        fn = self.or_()
        if self.peek() is not None:
            raise _Unsupported("trailing")
        return fn

    def or_(self) -> Fn:
        left = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            left = _or(left, self.and_())
        return left

    def and_(self) -> Fn:
        left = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            left = _and(left, self.cmp())
        return left

    def cmp(self) -> Fn:
        left = self.add()
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in _COMPARE:
            self.take()
            right = self.add()
            left = _compare(tok[1], left, right)
            nxt = self.peek()
            if nxt is not None and nxt[0] == "op" and nxt[1] in _COMPARE:
                raise _Unsupported("chained comparison")
        return left

    def add(self) -> Fn:
        left = self.mul()
        while True:
            tok = self.peek()
            if tok is None or tok not in (("op", "+"), ("op", "-")):
                return left
            self.take()
            left = _arith(tok[1], left, self.mul())

    def mul(self) -> Fn:
        left = self.unary()
        while self.peek() == ("op", "*"):
            self.take()
            left = _arith("*", left, self.unary())
        return left

    def unary(self) -> Fn:
        tok = self.peek()
        if tok == ("op", "!"):
            self.take()
            return _not(self.unary())
        if tok == ("op", "-"):
            self.take()
            return _neg(self.unary())
        return self.postfix()

    def postfix(self) -> Fn:
        fn = self.primary()
        while True:
            tok = self.peek()
            if tok == ("op", "."):
                self.take()
                kind, name = self.take()
                if kind != "name" or self.peek() == ("op", "("):
                    raise _Unsupported("method call")
                fn = _member(fn, name)
            elif tok == ("op", "["):
                self.take()
                kind, text = self.take()
                self.take("]")
                if kind == "str":
                    fn = _member(fn, text[1:-1])
                elif kind == "int":
                    fn = _index(fn, int(text))
                else:
                    raise _Unsupported("computed index")
            else:
                return fn

    def primary(self) -> Fn:
        kind, text = self.take()
        if kind == "int":
            value: Any = int(text)
            if value > _INT_MAX:
                raise _Unsupported("int literal")
            return _constant(value)
        if kind == "float":
            value = float(text)
            return _constant(value)
        if kind == "str":
            value = text[1:-1]
            return _constant(value)
        if kind == "name":
            if text in ("true", "false", "null"):
                value = {"true": True, "false": False, "null": None}[text]
                return _constant(value)
            if self.peek() == ("op", "("):
                raise _Unsupported("function call")
            if text not in self.names:
                raise _Unsupported("name")
            return _name(text)
        if (kind, text) == ("op", "("):
            fn = self.or_()
            self.take(")")
            return fn
        raise _Unsupported(text)


def _name(name: str) -> Fn:
    def get(act: Mapping[str, Any]) -> Any:
        try:
            return act[name]
        except KeyError:
            raise Fallback from None

    return get


def _member(obj: Fn, key: str) -> Fn:
    def get(act: Mapping[str, Any]) -> Any:
        value = obj(act)
        if type(value) is dict:
            try:
                return value[key]
            except KeyError:
                raise Fallback from None
        raise Fallback

    return get


def _index(obj: Fn, i: int) -> Fn:
    def get(act: Mapping[str, Any]) -> Any:
        value = obj(act)
        if type(value) is list and 0 <= i < len(value):
            return value[i]
        raise Fallback

    return get


def _and(left: Fn, right: Fn) -> Fn:
    def fn(act: Mapping[str, Any]) -> Any:
        a = left(act)
        if a is False:
            return False
        if a is not True:
            raise Fallback
        b = right(act)
        if type(b) is not bool:
            raise Fallback
        return b

    return fn


def _or(left: Fn, right: Fn) -> Fn:
    def fn(act: Mapping[str, Any]) -> Any:
        a = left(act)
        if a is True:
            return True
        if a is not False:
            raise Fallback
        b = right(act)
        if type(b) is not bool:
            raise Fallback
        return b

    return fn


def _not(operand: Fn) -> Fn:
    def fn(act: Mapping[str, Any]) -> Any:
        v = operand(act)
        if type(v) is not bool:
            raise Fallback
        return not v

    return fn


def _neg(operand: Fn) -> Fn:
    def fn(act: Mapping[str, Any]) -> Any:
        v = operand(act)
        t = type(v)
        if t is int:
            if v == _INT_MIN:
                raise Fallback
            return -v
        if t is float:
            return -v
        raise Fallback

    return fn


_ORDERED = (int, float, str, bool)
_COMPARE = frozenset({"==", "!=", "<", "<=", ">", ">="})


def _compare(op: str, left: Fn, right: Fn) -> Fn:
    if op == "==":

        def fn(act: Mapping[str, Any]) -> Any:
            a, b = left(act), right(act)
            t = type(a)
            if t is type(b) and (t in _ORDERED or a is None):
                return a == b
            raise Fallback
    elif op == "!=":

        def fn(act: Mapping[str, Any]) -> Any:
            a, b = left(act), right(act)
            t = type(a)
            if t is type(b) and (t in _ORDERED or a is None):
                return a != b
            raise Fallback
    elif op == "<":

        def fn(act: Mapping[str, Any]) -> Any:
            a, b = left(act), right(act)
            t = type(a)
            if t is type(b) and (
                t is int or t is str or t is bool or (t is float and a == a and b == b)  # noqa: PLR0124 - NaN
            ):
                return a < b
            raise Fallback
    elif op == "<=":

        def fn(act: Mapping[str, Any]) -> Any:
            a, b = left(act), right(act)
            t = type(a)
            if t is type(b) and (
                t is int or t is str or t is bool or (t is float and a == a and b == b)  # noqa: PLR0124 - NaN
            ):
                return a <= b
            raise Fallback
    elif op == ">":

        def fn(act: Mapping[str, Any]) -> Any:
            a, b = left(act), right(act)
            t = type(a)
            if t is type(b) and (
                t is int or t is str or t is bool or (t is float and a == a and b == b)  # noqa: PLR0124 - NaN
            ):
                return a > b
            raise Fallback
    else:

        def fn(act: Mapping[str, Any]) -> Any:
            a, b = left(act), right(act)
            t = type(a)
            if t is type(b) and (
                t is int or t is str or t is bool or (t is float and a == a and b == b)  # noqa: PLR0124 - NaN
            ):
                return a >= b
            raise Fallback

    return fn


def _arith(op: str, left: Fn, right: Fn) -> Fn:
    def fn(act: Mapping[str, Any]) -> Any:
        a, b = left(act), right(act)
        t = type(a)
        if t is not type(b):
            raise Fallback
        if t is int:
            r = a + b if op == "+" else a - b if op == "-" else a * b
            if _INT_MIN <= r <= _INT_MAX:
                return r
            raise Fallback
        if t is float:
            return a + b if op == "+" else a - b if op == "-" else a * b
        if t is str and op == "+":
            # Long text goes to CEL, whose cost check bounds a chain of concatenations.
            if len(a) + len(b) > _MAX_TEXT:
                raise Fallback
            return a + b
        raise Fallback

    return fn


def compile_fast(source: str, names: frozenset[str]) -> Fn | None:
    """A closure for `source` (CEL, without `${{ }}`), or None when it is outside the subset.

    `names` are the top-level names the closure may read from the activation."""
    try:
        tokens = _tokens(source)
        # Each operator may read a whole value (a long string compared): a long chain of them
        # goes to CEL, whose cost check bounds it (agentrun.engine.expr_cost).
        if sum(1 for kind, text in tokens if kind == "op" and text in _WORK_OPS) > _MAX_OPS:
            return None
        return _Parser(tokens, names).parse()
    except (_Unsupported, RecursionError):
        return None
