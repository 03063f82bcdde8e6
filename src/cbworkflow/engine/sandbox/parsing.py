"""Parsing an expression once: `ast.parse` under a lock, the static check, a bounded LRU cache of the result."""

from __future__ import annotations

import ast
import threading
import warnings
from collections import OrderedDict
from typing import Final

from .checker import Checker, Problem, depth_problem, private_problem
from .limits import MAX_EXPRESSION_CHARS

# CPython 3.11 before 3.11.8 corrupts the ast module's state when two threads build trees at once (gh-106905).
# The server parses on the event loop and in worker threads, so every ast.parse in the project holds this lock.
AST_LOCK = threading.Lock()

_CACHE_ENTRIES: Final = 512
_CACHE_CHARS: Final = 200_000  # parsed trees take ~200 bytes a source character: this keeps the cache to tens of MB


def _parse(expression: str) -> ast.Expression | tuple[str, str]:
    if len(expression) > MAX_EXPRESSION_CHARS:
        return "expression_too_long", f"is {len(expression):,} characters long (the limit is {MAX_EXPRESSION_CHARS:,})"
    try:
        with AST_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences: the tree is what counts
            tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:  # also "too many nested parentheses", null bytes, 4300+ digit literals
        where = f" at column {exc.offset}" if exc.offset else ""
        return "expression_syntax", f"does not parse ({exc.msg}{where})"
    except (RecursionError, MemoryError):
        return "expression_too_deep", "is nested too deeply to parse"
    except ValueError:  # e.g. a lone surrogate from JSON "\ud800" (UnicodeEncodeError)
        return "expression_syntax", "does not parse (it contains characters that are not valid text)"
    return depth_problem(tree) or tree


_cache: OrderedDict[tuple[str, tuple[str, ...]], ast.Expression | tuple[str, str]] = OrderedDict()
_cache_chars = 0
_cache_lock = threading.Lock()


def compile_expression(expression: str, names: tuple[str, ...]) -> ast.Expression | tuple[str, str]:
    """The checked tree of an expression, or its (code, detail) problem; a bounded LRU cache by text and names."""
    global _cache_chars
    if len(expression) > MAX_EXPRESSION_CHARS:
        return _parse(expression)
    key = (expression, names)
    with _cache_lock:
        if (found := _cache.get(key)) is not None:
            _cache.move_to_end(key)
            return found
    compiled = _parse(expression)
    if isinstance(compiled, ast.Expression) and (private := private_problem(compiled)):
        compiled = private
    if isinstance(compiled, ast.Expression):
        try:
            Checker(names).check(compiled.body, frozenset())
        except Problem as problem:
            compiled = (problem.code, problem.detail)
        except RecursionError:
            compiled = ("expression_too_deep", "is nested too deeply to check")
    with _cache_lock:
        if key not in _cache:
            _cache[key] = compiled
            _cache_chars += len(expression)
            while len(_cache) > _CACHE_ENTRIES or _cache_chars > _CACHE_CHARS:
                (old, _), _ = _cache.popitem(last=False)
                _cache_chars -= len(old)
    return compiled
