"""No function in bench/ is longer than MAX_LINES: each reads as the steps it takes, named."""

import ast

from tests.conftest import REPO

MAX_LINES = 60


def test_no_function_in_bench_is_longer_than_60_lines():
    long = []
    for path in sorted((REPO / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, long
