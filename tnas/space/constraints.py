"""Constraint expressions such as `params <= 20e6`, parsed once with `ast` and never `eval`ed.

Allowed: comparisons (chains too), `and`/`or`/`not`, `+ - * / // % **`, unary minus, numeric
literals, calls to `min`/`max`/`abs`, and the names in `tnas.space.config.DERIVED_NAMES`.
A division by zero, an overflow or a complex power counts as a violated constraint.

>>> rule = Constraint.parse("params <= 20e6")
>>> rule.holds({"params": 1e6}), rule.value({"params": 1e6})
(True, -19000000.0)
>>> Constraint.parse("2 * total_heads == 16").value({"total_heads": 4})
8.0
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tnas.space.config import DERIVED_NAMES
from tnas.space.errors import OneLineError, shown

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE: dict[type, Callable[[float, float], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}
MAX_LENGTH = 1000  # characters of one constraint
MAX_DEPTH = 50  # levels of nesting of one constraint's expression
# Returned for a violated constraint whose natural value would not be positive (`a < b`, a == b).
_VIOLATED = 1e-9


class ConstraintSyntaxError(OneLineError):
    """The expression is not an allowed constraint; the message is one line."""


@dataclass(frozen=True)
class Constraint:
    """One parsed constraint: `holds(q)` and `value(q)` (Optuna's convention, <= 0 satisfied)."""

    text: str
    tree: ast.expr

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Parse and check `text`; raises `ConstraintSyntaxError` naming the problem."""
        if not isinstance(text, str):
            raise ConstraintSyntaxError(f"a constraint must be a string, got {shown(text)}")
        if len(text) > MAX_LENGTH:
            raise ConstraintSyntaxError(
                f"constraint {shown(text)} has {len(text)} characters; at most {MAX_LENGTH}"
            )
        try:
            tree = ast.parse(text.strip(), mode="eval").body
        except (SyntaxError, ValueError) as err:  # ValueError: a null byte
            problem = err.msg if isinstance(err, SyntaxError) else str(err)
            raise ConstraintSyntaxError(
                f"constraint {text!r} is not a valid expression ({problem})"
            ) from None
        except (RecursionError, MemoryError):
            raise ConstraintSyntaxError(f"constraint {text!r} is nested too deeply") from None
        if _depth(tree) > MAX_DEPTH:
            raise ConstraintSyntaxError(
                f"constraint {text!r} is nested more than {MAX_DEPTH} levels deep"
            )
        if _check(tree, text) != "bool":
            raise ConstraintSyntaxError(
                f"constraint {text!r} is not a comparison (write e.g. 'params <= 20e6')"
            )
        return cls(text, tree)

    @property
    def names(self) -> set[str]:
        return {node.id for node in ast.walk(self.tree) if isinstance(node, ast.Name)}

    def holds(self, quantities: Mapping[str, float]) -> bool:
        try:
            return bool(_truth(self.tree, quantities))
        except (ZeroDivisionError, OverflowError, ValueError, TypeError):
            return False

    def value(self, quantities: Mapping[str, float]) -> float:
        """<= 0 when satisfied: `a <= b` gives a - b, `a >= b` gives b - a, `a == b` gives
        |a - b|, a chain the largest of its links, `and`/`or`/`not` give 0 or 1."""
        try:
            return float(_violation(self.tree, quantities))
        except (ZeroDivisionError, OverflowError, ValueError, TypeError):
            return math.inf


def _depth(tree: ast.expr) -> int:
    """How deep the expression nests (without recursion, so any tree can be measured)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _check(node: ast.expr, text: str) -> str:
    """Static check of one node; returns its kind, "bool" or "num"."""
    if isinstance(node, ast.Compare):
        for operand in (node.left, *node.comparators):
            _expect(operand, "num", text)
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise ConstraintSyntaxError(f"constraint {text!r}: comparison operator not allowed")
        return "bool"
    if isinstance(node, ast.BoolOp):
        for operand in node.values:
            _expect(operand, "bool", text)
        return "bool"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _expect(node.operand, "bool", text)
        return "bool"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        _expect(node.operand, "num", text)
        return "num"
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _expect(node.left, "num", text)
        _expect(node.right, "num", text)
        return "num"
    if isinstance(node, ast.Constant):
        if isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return "num"
        raise ConstraintSyntaxError(f"constraint {text!r}: {node.value!r} is not a number")
    if isinstance(node, ast.Name):
        if node.id not in DERIVED_NAMES:
            raise ConstraintSyntaxError(
                f"constraint {text!r}: unknown quantity {node.id!r}; "
                f"valid: {', '.join(DERIVED_NAMES)}"
            )
        return "num"
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ConstraintSyntaxError(
                f"constraint {text!r}: only {', '.join(_FUNCTIONS)} may be called"
            )
        if node.keywords or not node.args or (node.func.id == "abs" and len(node.args) != 1):
            raise ConstraintSyntaxError(f"constraint {text!r}: bad arguments to {node.func.id}")
        for arg in node.args:
            _expect(arg, "num", text)
        return "num"
    raise ConstraintSyntaxError(
        f"constraint {text!r}: {type(node).__name__} is not allowed in a constraint"
    )


def _expect(node: ast.expr, kind: str, text: str) -> None:
    if _check(node, text) != kind:
        wanted = "a comparison" if kind == "bool" else "a number"
        raise ConstraintSyntaxError(f"constraint {text!r}: {ast.unparse(node)!r} is not {wanted}")


def _number(node: ast.expr, q: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(q[node.id])
    if isinstance(node, ast.UnaryOp):
        value = _number(node.operand, q)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return float(_BINARY[type(node.op)](_number(node.left, q), _number(node.right, q)))
    if isinstance(node, ast.Call):
        return float(_FUNCTIONS[node.func.id](*(_number(arg, q) for arg in node.args)))
    raise TypeError(f"not a numeric node: {ast.dump(node)}")


def _truth(node: ast.expr, q: Mapping[str, float]) -> bool:
    if isinstance(node, ast.Compare):
        values = [_number(operand, q) for operand in (node.left, *node.comparators)]
        return all(
            _COMPARE[type(op)](a, b) for op, a, b in zip(node.ops, values, values[1:], strict=False)
        )
    if isinstance(node, ast.BoolOp):
        combine = all if isinstance(node.op, ast.And) else any
        return combine(_truth(value, q) for value in node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _truth(node.operand, q)
    raise TypeError(f"not a boolean node: {ast.dump(node)}")


def _violation(node: ast.expr, q: Mapping[str, float]) -> float:
    if not isinstance(node, ast.Compare):
        return 0.0 if _truth(node, q) else 1.0
    values = [_number(operand, q) for operand in (node.left, *node.comparators)]
    worst = -math.inf
    for op, a, b in zip(node.ops, values, values[1:], strict=False):
        if isinstance(op, ast.Lt | ast.LtE):
            link = a - b
        elif isinstance(op, ast.Gt | ast.GtE):
            link = b - a
        elif isinstance(op, ast.Eq):
            link = abs(a - b)
        else:
            link = 0.0 if a != b else 1.0
        if not _COMPARE[type(op)](a, b):
            link = max(link, _VIOLATED)  # strict `<` with a == b is violated at 0
        worst = max(worst, link)
    return worst
