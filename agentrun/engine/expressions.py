"""CEL expressions and `${{ }}` templates, compiled once per workflow.

An expression is compiled when the workflow is validated and knows the top-level names
it references, so the engine builds each activation from that list only: a node's cost
does not grow with the size of the execution.
"""

from __future__ import annotations

import base64
import datetime as _dt
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agentrun.engine import limits
from agentrun.engine.expr_cost import Node, Unparsed, crude, estimate, is_flat, parse
from agentrun.engine.json_values import unstorable


def _load_cel() -> ModuleType:
    """The CEL library's extension module (`cel.cel`) alone. The package's `__init__` also
    imports its command line (typer, rich, prompt_toolkit, pygments): ~30 MiB of RSS and a
    few hundred ms of start-up in every process that evaluates an expression. Registered
    under its own name, so a later `import cel` uses this same module (same types)."""
    loaded = sys.modules.get("cel.cel")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("cel")  # a top-level name: finds, does not import
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(location, "cel" + suffix)
            ext = importlib.util.spec_from_file_location("cel.cel", path)
            if os.path.exists(path) and ext is not None and ext.loader is not None:
                module = importlib.util.module_from_spec(ext)
                sys.modules["cel.cel"] = module
                ext.loader.exec_module(module)
                return module
    import cel as package  # another layout: the whole package

    return package


if TYPE_CHECKING:
    import cel
else:
    cel = _load_cel()

MAX_SOURCE_BYTES = 4096
# The one empty name set every constant template, step and node shares: since Python 3.10
# each `frozenset()` is a new 216-byte object, 40,000 of them in a 10,000-node plan.
NO_NAMES: frozenset[str] = frozenset()
_CONSTANT_TYPES = frozenset({int, float, bool})
MAX_COLLECTION = 10_000

# What the CEL library (the Rust core, without the opt-in Python stdlib) provides, and the
# operator and macro names `Program.functions()` reports. Anything else would fail only at run
# time ("Undefined variable or function"), so validation refuses it.
FUNCTIONS = frozenset(
    {
        "size",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "timestamp",
        "duration",
        "dyn",
        "type",
        "getFullYear",
        "getMonth",
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
    }
)
_OPERATORS = frozenset(
    {
        "_+_",
        "_-_",
        "_*_",
        "_/_",
        "_%_",
        "-_",
        "!_",
        "_==_",
        "_!=_",
        "_<_",
        "_<=_",
        "_>_",
        "_>=_",
        "_&&_",
        "_||_",
        "_?_:_",
        "_[_]",
        "@in",
        "@not_strictly_false",
    }
)

_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_COMPREHENSION = re.compile(r"\.\s*(all|exists_one|exists|map|filter)\s*\(")
_BOUND_VAR = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_NODE_REF = re.compile(r"\bnodes\s*\.\s*([A-Za-z_]\w*)")
_NODES_WORD = re.compile(r"\bnodes\b")
_STRING = re.compile(
    r"""[rR]?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")""",
    re.DOTALL,
)


class ExpressionError(Exception):
    """An expression failed at compile or run time; `path` locates it in the workflow."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def _strip_strings(source: str) -> str:
    return _STRING.sub('""', source)


def _has_nested_comprehension(code: str) -> bool:
    """True when a comprehension macro appears inside another one's arguments."""
    depth = 0
    open_comprehensions: list[int] = []  # paren depth at which each comprehension opened
    i = 0
    starts = {m.end() - 1 for m in _COMPREHENSION.finditer(code)}
    while i < len(code):
        ch = code[i]
        if ch == "(":
            depth += 1
            if i in starts:
                if open_comprehensions:
                    return True
                open_comprehensions.append(depth)
        elif ch == ")":
            if open_comprehensions and open_comprehensions[-1] == depth:
                open_comprehensions.pop()
            depth -= 1
        i += 1
    return False


class Activation(dict[str, Any]):
    """What the expressions of one evaluation scope see (a node's call, its output transform,
    its exports, an edge): a dict, built once, that converts itself into the CEL library's
    `Context` on its first evaluation and hands the same one to the next. Converting the
    values is most of an evaluation's cost, so a scope's expressions pay for it once.
    Read-only once built: a change after the first evaluation would not be seen."""

    __slots__ = ("_context",)

    def context(self) -> cel.Context:
        try:
            return self._context
        except AttributeError:
            self._context: cel.Context = cel.Context(self)
            return self._context


# What an expression's text compiles to, whatever its path and scope: each distinct text of a
# workflow (and of the workflows compiled since) is compiled by the CEL library once.
# (problem, program, ast, flat, names, bounded, node refs or None when a node is not named
# by its id); `problem`: the first error that the text alone causes.
_Compiled = tuple[
    str | None,
    Any,
    Node | None,
    bool,
    frozenset[str],
    bool,
    frozenset[str] | None,
]
_COMPILED: dict[str, _Compiled] = {}
# ~5 KiB an entry for an expression of a few operators: at most a few MiB kept past their plans.
MAX_COMPILED = 1024


def _compile(source: str) -> _Compiled:
    """The checks of `Expression` that depend on its text alone, in their order, and what
    the text compiles to."""
    none: frozenset[str] = NO_NAMES
    if len(source.encode()) > MAX_SOURCE_BYTES:
        return (
            f"expression is longer than {MAX_SOURCE_BYTES} bytes",
            None,
            None,
            False,
            none,
            False,
            none,
        )
    if not source.strip():
        return ("empty expression", None, None, False, none, False, none)
    code = _strip_strings(source)
    if _has_nested_comprehension(code):
        problem = "a comprehension (map, filter, all, exists) may not be nested in another"
        return (problem, None, None, False, none, False, none)
    try:
        program = cel.compile(source)
    except ValueError as exc:
        return (f"syntax error: {_first_line(exc)}", None, None, False, none, False, none)
    try:
        unknown_fns = sorted(set(program.functions()) - FUNCTIONS - _OPERATORS)
    except Exception:  # pragma: no cover - static analysis never fails on a parsed program
        unknown_fns = []
    if unknown_fns:
        problem = f"unknown function {unknown_fns[0]!r}; the functions are: {', '.join(sorted(FUNCTIONS))}"
        return (problem, None, None, False, none, False, none)
    try:
        variables = set(program.variables())
    except Exception:  # pragma: no cover - static analysis never fails on a parsed program
        variables = set()
    ast: Node | None
    try:
        ast = parse(source)
        flat = is_flat(ast)
    except Unparsed:
        ast, flat = None, False
    bound = set(_BOUND_VAR.findall(code))
    names = frozenset(variables - bound)
    bounded = bool(_COMPREHENSION.search(code))
    found = _NODE_REF.findall(code)
    refs: frozenset[str] | None = frozenset(found)
    if "nodes" in names and len(_NODES_WORD.findall(code)) != len(found):
        refs = None
    return (None, program, ast, flat, names, bounded, refs)


class Expression:
    """One compiled CEL expression."""

    __slots__ = ("_ast", "_bounded", "_flat", "_program", "names", "node_refs", "path", "source")

    def __init__(self, source: str, path: str, allowed: frozenset[str] | None = None) -> None:
        self.source = source
        self.path = path
        facts = _COMPILED.get(source)
        if facts is None:
            facts = _compile(source)
            if len(_COMPILED) >= MAX_COMPILED:
                _COMPILED.clear()  # a bound, not a policy: specs rarely hold this many texts
            _COMPILED[source] = facts
        problem, self._program, self._ast, self._flat, self.names, self._bounded, refs = facts
        if problem is not None:
            raise ExpressionError(path, problem)
        if allowed is not None:
            unknown = sorted(self.names - allowed)
            if unknown:
                raise ExpressionError(
                    path,
                    f"unknown name {unknown[0]!r}; names in scope here: {', '.join(sorted(allowed))}",
                )
        if refs is None:
            raise ExpressionError(path, "refer to a node by its id: nodes.ID.output")
        self.node_refs = refs

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        if self._bounded:
            for name in self.names:
                _check_size(activation.get(name), self.path)
        if not self._flat:
            self.check_cost(activation)
        # The library takes a dict (or its Context) and refuses any other mapping.
        context: dict[str, Any] | cel.Context
        if type(activation) is Activation:
            context = activation.context()
        else:
            context = activation if isinstance(activation, dict) else dict(activation)
        try:
            result = self._program.execute(context)
        except KeyError as exc:
            raise ExpressionError(self.path, f"no such key: {exc.args[0]!r}") from None
        except (TypeError, ValueError, RuntimeError, ArithmeticError, LookupError) as exc:
            raise ExpressionError(self.path, _first_line(exc)) from None
        value = to_json(result)
        problem = unstorable(value)
        if problem is not None:  # stored alike by every backend, or refused (json_values)
            raise ExpressionError(self.path, f"the result cannot be stored: {problem}")
        return value

    def check_cost(self, activation: Mapping[str, Any]) -> None:
        """Refuses an evaluation whose estimated cost is over the limit, before it runs: the
        library holds the event loop (and the GIL) for as long as it evaluates."""
        limit = limits.current().expression_cost
        if self._ast is not None:
            cost = estimate(self._ast, activation, limit)
        else:
            cost = crude(self.source, activation, limit)
        if not cost <= limit:  # NaN counts as over
            shown = "more than 10^9" if not cost < 1e9 else f"{cost:.0f}"
            raise ExpressionError(
                self.path,
                f"cost limit exceeded: this evaluation would cost {shown} units over these values, "
                f"the limit is {limit} (a comprehension over n elements costs about n*n/2)",
            )

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_size(value: Any, path: str) -> None:
    """Refuses collections over MAX_COLLECTION before a comprehension walks them."""
    stack = [value]
    seen = 0
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            if len(item) > MAX_COLLECTION:
                raise ExpressionError(
                    path, f"a collection has {len(item)} elements; the limit is {MAX_COLLECTION}"
                )
            seen += len(item)
            if seen > 10 * MAX_COLLECTION:
                return
            stack.extend(item.values() if isinstance(item, dict) else item)


_SCALARS = (str, int, float, bool, type(None))


def to_json(value: Any) -> Any:
    """CEL results as JSON values: timestamps as RFC 3339 text, durations as seconds."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, cel.OptionalValue):
        return to_json(value.value()) if value.has_value() else None
    return str(value)


def to_text(value: Any) -> str:
    """How a value reads when interpolated into a string: JSON text, null as empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # Keys sorted: maps that went through CEL have no order of their own.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


class Template:
    """A JSON value whose strings may hold `${{ }}`, compiled to an evaluator.

    `evaluate` returns the constant itself when there is no expression, so callers must
    not mutate what they get.
    """

    __slots__ = ("_fn", "constant", "expressions", "names", "node_refs")

    def __init__(
        self,
        names: frozenset[str],
        node_refs: frozenset[str],
        fn: Callable[[Mapping[str, Any]], Any] | None,
        constant: Any,
        expressions: Sequence[Expression],
    ) -> None:
        self.names = names
        self.node_refs = node_refs
        self._fn = fn
        self.constant = constant
        self.expressions = expressions

    @property
    def is_constant(self) -> bool:
        return self._fn is None

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        fn = self._fn
        return self.constant if fn is None else fn(activation)


def compile_template(value: Any, path: str, allowed: frozenset[str] | None = None) -> Template:
    """Compiles a JSON value; raises ExpressionError listing the first bad expression.

    Use `compile_template_collect` to gather every error of a value."""
    errors: list[ExpressionError] = []
    template = compile_template_collect(value, path, allowed, errors)
    if errors:
        raise errors[0]
    return template


def scalar_template(value: Any) -> Template | None:
    """The template of a number, a bool or null (most values of a large spec), which holds no
    expression; None for any other value. A constant's `expressions` is the empty tuple: no
    list each, for the collector to walk (a 10,000-node plan held 10,000)."""
    if value is None or value.__class__ in _CONSTANT_TYPES:
        return Template(NO_NAMES, NO_NAMES, None, value, ())
    return None


def compile_template_collect(
    value: Any, path: str, allowed: frozenset[str] | None, errors: list[ExpressionError]
) -> Template:
    scalar = scalar_template(value)
    if scalar is not None:
        return scalar
    expressions: list[Expression] = []
    fn = _build(value, path, allowed, errors, expressions)
    if not expressions:
        return Template(NO_NAMES, NO_NAMES, fn, None if fn is not None else value, ())
    names = frozenset().union(*(e.names for e in expressions))
    refs = frozenset().union(*(e.node_refs for e in expressions))
    return Template(names, refs, fn, None if fn is not None else value, expressions)


def _build(
    value: Any,
    path: str,
    allowed: frozenset[str] | None,
    errors: list[ExpressionError],
    out: list[Expression],
) -> Callable[[Mapping[str, Any]], Any] | None:
    """Returns an evaluator, or None when `value` holds no expression (a constant)."""
    if isinstance(value, str):
        return _build_string(value, path, allowed, errors, out)
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            parts.append((key, item, _build(item, f"{path}.{key}", allowed, errors, out)))
        if all(fn is None for _, _, fn in parts):
            return None

        def eval_dict(act: Mapping[str, Any]) -> Any:
            return {k: (v if fn is None else fn(act)) for k, v, fn in parts}

        return eval_dict
    if isinstance(value, list):
        fns = [_build(item, f"{path}[{i}]", allowed, errors, out) for i, item in enumerate(value)]
        if all(fn is None for fn in fns):
            return None
        items = list(value)

        def eval_list(act: Mapping[str, Any]) -> Any:
            return [fn(act) if fn is not None else items[i] for i, fn in enumerate(fns)]

        return eval_list
    return None


def _build_string(
    text: str,
    path: str,
    allowed: frozenset[str] | None,
    errors: list[ExpressionError],
    out: list[Expression],
) -> Callable[[Mapping[str, Any]], Any] | None:
    if "${{" not in text:
        return None
    matches = list(_TEMPLATE.finditer(text))
    if not matches:
        errors.append(ExpressionError(path, "unclosed ${{ (expected }})"))
        return None
    compiled: list[Expression] = []
    for m in matches:
        try:
            compiled.append(Expression(m.group(1).strip(), path, allowed))
        except ExpressionError as exc:
            errors.append(exc)
    if len(compiled) != len(matches):
        return None
    out.extend(compiled)
    if len(matches) == 1 and matches[0].start() == 0 and matches[0].end() == len(text):
        return compiled[0].evaluate
    pieces: list[str | Expression] = []
    last = 0
    for m, expr in zip(matches, compiled):
        if m.start() > last:
            pieces.append(text[last : m.start()])
        pieces.append(expr)
        last = m.end()
    if last < len(text):
        pieces.append(text[last:])

    def interpolate(act: Mapping[str, Any]) -> str:
        return "".join(p if isinstance(p, str) else to_text(p.evaluate(act)) for p in pieces)

    return interpolate


def compile_bool(source: str, path: str, allowed: frozenset[str] | None = None) -> Expression:
    """A `when`/`guard` field: either `${{ EXPR }}` or a bare CEL expression."""
    text = source.strip()
    m = _TEMPLATE.fullmatch(text)
    if m:
        text = m.group(1).strip()
    elif "${{" in text:
        raise ExpressionError(path, "must be a single ${{ }} expression, not text around it")
    return Expression(text, path, allowed)


def normalize_numbers(value: Any) -> Any:
    """Integral floats become ints, as FORMAT.md asks for data from protobuf Struct."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, dict):
        return {k: normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_numbers(v) for v in value]
    return value
