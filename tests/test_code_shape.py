"""Code shape (issue 14; DESIGN.md style 9): in clearbench/ and eval/ no function is over 60 lines or takes more
than 7 parameters, and no module of the four packages is over 400 lines (data_gen's drawing code may keep longer
functions where splitting would hurt reading; its modules still fit the limit)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES, MAX_PARAMS, MAX_MODULE_LINES = 60, 7, 400


def _files(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs] + [x.arg for x in (a.vararg, a.kwarg) if x]
    return len([n for n in names if n not in ("self", "cls")])


def test_functions_are_short_and_take_few_parameters():
    bad = []
    for path in _files("clearbench", "eval"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    bad.append(f"{where}: {lines} lines")
                if _params(node) > MAX_PARAMS:
                    bad.append(f"{where}: {_params(node)} parameters")
    assert not bad, "\n".join(bad)


def test_modules_are_short():
    bad = [f"{p.relative_to(ROOT)}: {n} lines" for p in _files("clearbench", "eval", "baselines", "data_gen")
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not bad, "\n".join(bad)
