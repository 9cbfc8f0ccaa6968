"""The ``python`` scorer type: a scorer written in Python, named by ``ref: "module:attribute"``.

What the reference may name:

* a **function** ``fn(inp: EvalInput)``, sync or async, returning anything
  :func:`~otel_online_eval.scorers.to_score` accepts. ``args:`` are bound as keyword
  arguments (``fn(inp, **args)``).
* a **class**: it is instantiated once with ``args:`` as keyword arguments, and the instance
  must have a ``score(inp)`` method (sync or async). Without a ``name`` it gets the YAML name.
* a ready **scorer instance** (an object with a ``score`` method); ``args:`` is not allowed.

The module is imported when the configuration loads, so an import failure, a missing
attribute or a signature that cannot take the EvalInput is a configuration error at ``ref``
(or ``args``), not a run-time surprise.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

from otel_online_eval._validate import Reader
from otel_online_eval.scorers._fields import builtin_type, describe
from otel_online_eval.scorers.base import EvalInput, FunctionScorer, Scorer

__all__ = ["RefError", "build_python", "resolve_ref"]


class RefError(Exception):
    """Why a reference cannot be resolved; ``key`` is the option to blame."""

    def __init__(self, message: str, key: str = "ref") -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def resolve_ref(ref: str) -> Any:
    """Import ``package.module:attr.path`` and return the object it names.

    Raises:
        RefError: with a message naming the module or attribute and the underlying error.
    """
    module_name, sep, attr_path = ref.partition(":")
    parts = attr_path.split(".")
    if (
        not sep
        or not all(p.isidentifier() for p in module_name.split("."))
        or not all(p.isidentifier() for p in parts)
    ):
        raise RefError(
            f"must look like 'package.module:function' or 'package.module:Class', got {ref!r}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RefError(f"cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:
        raise RefError(f"importing module {module_name!r} failed: {_one_line(exc)}") from exc
    where = module_name
    for part in parts:
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise RefError(f"{where!r} has no attribute {part!r}") from exc
        where = f"{where}:{part}" if where == module_name else f"{where}.{part}"
    return obj


def _check_call(fn: Callable[..., Any], what: str, key: str, **kwargs: Any) -> None:
    """Raise RefError when ``fn(inp, **kwargs)`` could not be called."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and some C callables: nothing to check
    try:
        signature.bind(None, **kwargs)
    except TypeError as exc:
        raise RefError(
            f"{what} cannot be called as {what}(inp{', **args' if kwargs else ''}): {exc}", key
        ) from None


class _NamedScorer:
    """Gives a scorer instance that has no ``name`` (and cannot take one) the YAML name."""

    def __init__(self, name: str, inner: Any) -> None:
        self.name = name
        self.inner = inner
        self.score: Callable[[EvalInput], Any] = inner.score

    def __repr__(self) -> str:
        return f"<{self.name}: {self.inner!r}>"


def _as_scorer(name: str, obj: Any, ref: str) -> Scorer:
    method = getattr(obj, "score", None)
    if not callable(method):
        raise RefError(f"{ref} made a {type(obj).__name__} with no score(inp) method")
    _check_call(method, f"{type(obj).__name__}.score", "ref")
    if isinstance(getattr(obj, "name", None), str):
        return obj  # type: ignore[no-any-return]
    try:
        obj.name = name
    except (AttributeError, TypeError):
        return _NamedScorer(name, obj)
    return obj  # type: ignore[no-any-return]


def make_scorer(name: str, ref: str, args: Mapping[str, Any] | None) -> Scorer:
    """Resolve ``ref`` and adapt what it names to the Scorer protocol.

    Raises:
        RefError: when the reference or the args do not make a scorer.
    """
    obj = resolve_ref(ref)
    if inspect.isclass(obj):
        try:
            instance = obj(**(args or {}))
        except Exception as exc:
            call = f"{ref}(**args)" if args else f"{ref}()"
            raise RefError(f"{call} failed: {_one_line(exc)}", "args" if args else "ref") from exc
        return _as_scorer(name, instance, ref)
    if inspect.ismodule(obj):
        raise RefError(f"{ref} is a module, not a function, a class or a scorer")
    if callable(getattr(obj, "score", None)):
        if args:
            raise RefError(f"{ref} is already a scorer instance, so it takes no args", "args")
        return _as_scorer(name, obj, ref)
    if callable(obj):
        _check_call(obj, ref, "args" if args else "ref", **(args or {}))
        fn = functools.partial(obj, **args) if args else obj
        scorer: Scorer = cast(Scorer, FunctionScorer(fn, name=name))
        return scorer
    kind = describe(obj)
    if kind == type(obj).__name__:
        kind = f"a {kind}"
    raise RefError(f"{ref} is {kind}, not a function, a class or a scorer")


@builtin_type("python", inline=False)
def build_python(name: str, opts: Reader) -> Scorer | None:
    """``python``: ``ref: "package.module:function"`` (or ``:Class``), ``args`` (keyword
    arguments for the class or function)."""
    ref = opts.str("ref", required=True)
    raw_args = opts.raw("args")
    args: dict[str, Any] | None = None
    if raw_args is not None:
        if not isinstance(raw_args, Mapping):
            opts.error("args", f"must be a mapping of keyword arguments, got {describe(raw_args)}")
            return None
        bad = [k for k in raw_args if not (isinstance(k, str) and k.isidentifier())]
        if bad:
            opts.error("args", f"keys must be Python identifiers, got {bad[0]!r}")
            return None
        args = dict(raw_args)
    if ref is None:
        return None
    try:
        return make_scorer(name, ref, args)
    except RefError as exc:
        opts.error(exc.key, exc.message)
        return None
