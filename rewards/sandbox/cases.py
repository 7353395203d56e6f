"""Test cases on the host: normalise the accepted forms, compare stdin/stdout outputs, and (for the
in-process judge only) rewrite comparisons through the equality guard."""

import ast
import functools
import json
import math
import secrets


def normalize_tests(tests, *, entry_point: str | None = None):
    """-> (mode, items). Accepted forms:

    - a string of assert-style code (HumanEval ``def check(candidate)``); with ``entry_point`` the
      test is that code followed by ``check(<entry_point>)``. One test.
    - a list of strings: each one a test (MBPP ``test_list``).
    - a list of ``{"input": str, "output": str}``, or ``{"inputs": [...], "outputs": [...]}``
      (APPS style): stdin/stdout cases.
    - a JSON string of any of the two previous forms.
    """
    if isinstance(tests, str):
        stripped = tests.strip()
        if stripped[:1] in "[{" and stripped:
            try:
                return normalize_tests(json.loads(stripped), entry_point=entry_point)
            except json.JSONDecodeError:
                pass
        code = tests
        if entry_point:
            code = f"{tests}\n\ncheck({entry_point})\n"
        return "assert", [code]
    if isinstance(tests, dict) and "inputs" in tests and "outputs" in tests:
        ins, outs = list(tests["inputs"]), list(tests["outputs"])
        if len(ins) != len(outs):
            raise ValueError(f"tests: {len(ins)} inputs but {len(outs)} outputs; give one output per input.")
        return "io", [(_as_text(i), _as_text(o)) for i, o in zip(ins, outs)]
    if isinstance(tests, (list, tuple)):
        items = list(tests)
        if items and all(isinstance(t, dict) for t in items):
            for t in items:
                if "input" not in t or "output" not in t:
                    raise ValueError(f"tests: case {t!r} lacks an 'input' or 'output' key; write "
                                     f'{{"input": "...", "output": "..."}}.')
            return "io", [(_as_text(t["input"]), _as_text(t["output"])) for t in items]
        if all(isinstance(t, str) for t in items):
            return "assert", items
    raise ValueError(f"tests={tests!r:.200}: expected assert code (str), a list of assert strings, or "
                     f'stdin/stdout cases [{{"input": ..., "output": ...}}].')


def _as_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return "\n".join(map(str, value)) + "\n"
    return str(value)


def outputs_match(actual: str, expected: str, *, float_tol: float | None = None) -> bool:
    """Token-wise comparison with whitespace normalised, line by line.

    Lines are split on whitespace; blank lines at the end are ignored; the numbers of remaining
    lines must be equal and every expected line must match the actual line at the same place, token
    for token. With ``float_tol``, tokens that both parse as floats match when
    ``|a - e| <= float_tol * max(1, |e|)``. Printing only the first expected line fails.
    """
    a, e = _lines(actual), _lines(expected)
    if len(a) != len(e):
        return False
    for la, le in zip(a, e):
        if len(la) != len(le):
            return False
        for ta, te in zip(la, le):
            if ta == te:
                continue
            if float_tol is None:
                return False
            try:
                fa, fe = float(ta), float(te)
            except ValueError:
                return False
            if not (math.isfinite(fa) and math.isfinite(fe)) or abs(fa - fe) > float_tol * max(1.0, abs(fe)):
                return False
    return True


def _lines(text: str) -> list[list[str]]:
    lines = [line.split() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def guard_name() -> str:
    return "__trl_eq_%s__" % secrets.token_hex(6)  # a per-run name the program does not know


class _EqGuard(ast.NodeTransformer):
    """``a == b`` / ``!=`` / ``in`` / ``not in`` -> ``<guard>(a, b, op)``: the harness's guard fails the
    test when either side carries an ``__eq__``/``__ne__`` defined by the program (the always-equal
    hack), then compares as Python would."""

    OPS = {ast.Eq: 0, ast.NotEq: 1, ast.In: 2, ast.NotIn: 3}

    def __init__(self, name: str):
        self.name = name

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) != 1 or type(node.ops[0]) not in self.OPS:
            return node
        call = ast.Call(func=ast.Name(self.name, ast.Load()),
                        args=[node.left, node.comparators[0], ast.Constant(self.OPS[type(node.ops[0])])],
                        keywords=[])
        return ast.copy_location(call, node)


@functools.lru_cache(maxsize=4096)
def _guard_template(test: str) -> str:
    """The test with its comparisons routed through a placeholder guard name (cached per test text)."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return test  # it fails the same way inside the sandbox
    tree = ast.fix_missing_locations(_EqGuard("__TRL_EQ_GUARD__").visit(tree))
    return ast.unparse(tree)


def sandbox_tests(items, mode: str, guard: str | None) -> list[str]:
    if mode != "assert":
        return [t[0] for t in items]
    if guard is None:
        return list(items)
    return [_guard_template(t).replace("__TRL_EQ_GUARD__", guard) for t in items]
