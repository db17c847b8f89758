"""What a job performs: turning *the call* into an importable, JSON-carried invocation.

The client accepts ``hfcelery.call(func, *args, **kwargs)``, a :class:`functools.partial`, a Celery
signature (``task.s(...)``) or a callable that takes no arguments. Each becomes an
:class:`Invocation`: the Celery task that runs it, a dotted path naming the function, and its
arguments. Everything is checked here, before the client writes or sends anything.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from celery import Task
from celery.canvas import Signature
from celery.utils.imports import import_from_cwd

from hfcelery.errors import (
    ArgumentSerializationError,
    ForbiddenFunctionError,
    FunctionNotFoundError,
    InvalidCallError,
)
from hfcelery.jsonutil import to_json
from hfcelery.options import JobOptions, options_of
from hfcelery.validation import (
    MAX_ARGUMENT_DEPTH,
    MAX_NAME_LENGTH,
    TYPE_MARKER,
    argument_problem,
    problem_with_function_path,
    storable_chars,
)

#: Name of the generic Celery task that performs plain functions.
PERFORM_TASK_NAME = "hfcelery.perform"
#: Message header marking a message whose job hfcelery has written already.
JOB_HEADER = "hfcelery_job"
#: Message header marking a plain Celery task that hfcelery only tracks (sent again by it).
TRACKED_HEADER = "hfcelery_tracked"
#: Message header with a stamp fresh for every send of a plain Celery task: a message Celery
#: sends again on purpose (``replace``, a re-used id) carries a new one, a broker's redelivery
#: the same.
STAMP_HEADER = "hfcelery_sent"


@dataclass(frozen=True, slots=True)
class Call:
    """A function with its arguments, to be performed by a worker: ``call(func, *args, **kw)``."""

    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def call(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Call:
    """Describe a call of ``func(*args, **kwargs)`` for a background job.

    ``func`` is a module-level function, a classmethod or staticmethod reachable from its
    module, or a Celery task. Nothing is checked until the call is enqueued.
    """
    return Call(func, args, dict(kwargs))


@dataclass(frozen=True, slots=True)
class Invocation:
    """A validated call, ready to be stored and sent.

    ``function`` names what runs (``module:qualname`` for a plain function, the task name for a
    Celery task); ``task_name`` is the Celery task that the message is addressed to.
    """

    task_name: str
    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    args_json: str
    kwargs_json: str
    options: dict[str, Any] = field(default_factory=dict)
    job_options: JobOptions = field(default_factory=JobOptions)
    #: The function or Celery task that runs (for its filters); None if not known here.
    runs: object = None

    def display_name(self) -> str | None:
        """The ``@display_name`` template filled with the arguments, if there is one."""
        name = self._fill(self.job_options.display_name, "display name")
        if name is None:
            return None
        # Filled from arguments that may hold what a store cannot (NUL, lone surrogates).
        return storable_chars(name)[:MAX_NAME_LENGTH]

    def queue(self) -> str | None:
        """The ``@queue`` name, filled with the arguments as Hangfire does (``"reports-{0}"``),
        if there is one."""
        return self._fill(self.job_options.queue, "queue name")

    def _fill(self, template: str | None, what: str) -> str | None:
        if template is None or "{" not in template:
            return template
        try:
            return template.format(*self.args, **self.kwargs)
        except (IndexError, KeyError, ValueError, AttributeError) as exc:
            raise InvalidCallError(
                f"{what} {template!r} of {self.function} does not fit its arguments: {exc!r}"
            ) from exc

    @property
    def is_plain_function(self) -> bool:
        return self.task_name == PERFORM_TASK_NAME

    def message_args(self) -> tuple[Any, ...]:
        """Positional arguments of the Celery message."""
        if self.is_plain_function:
            return (self.function, *self.args)
        return self.args


def to_invocation(the_call: object, *, extra_arguments: int = 0) -> Invocation:
    """Normalise any accepted form of *the call* into an :class:`Invocation`, or raise.

    ``extra_arguments``: the function will get that many more positional arguments (a
    continuation's parent result and exception), so check that it accepts them.
    """
    if isinstance(the_call, Signature):
        return _from_signature(the_call)
    if isinstance(the_call, Call):
        func, args, kwargs = the_call.func, tuple(the_call.args), dict(the_call.kwargs)
    elif isinstance(the_call, functools.partial):
        func, args, kwargs = _flatten_partial(the_call)
    elif callable(the_call):
        func, args, kwargs = the_call, (), {}
    else:
        raise InvalidCallError(
            f"cannot enqueue {the_call!r}: pass hfcelery.call(func, ...), a functools.partial, "
            "a Celery signature or a callable that takes no arguments",
            target=the_call,
        )
    if isinstance(func, Task):
        return _build(
            func.name, func.name, args, kwargs, target=func, job_options=options_of(func), runs=func
        )
    path = function_path(func)
    _check_arguments_fit(func, (*args, *([None] * extra_arguments)), kwargs, path)
    return _build(
        PERFORM_TASK_NAME, path, args, kwargs, target=func, job_options=options_of(func), runs=func
    )


def function_path(func: object) -> str:
    """Return ``module:qualname`` for an importable function, or raise :class:`InvalidCallError`."""
    if isinstance(func, functools.partial):
        raise InvalidCallError("nested functools.partial objects are not supported", target=func)
    target = func
    if inspect.ismethod(func):
        owner = func.__self__
        if not inspect.isclass(owner):
            raise InvalidCallError(
                f"{func.__qualname__} is a method bound to an instance, which a worker cannot "
                "import: use a module-level function, a classmethod or a staticmethod",
                target=func,
            )
        target = func.__func__
    if not callable(func) or not hasattr(target, "__qualname__"):
        raise InvalidCallError(f"{func!r} is not a function", target=func)
    module = getattr(target, "__module__", None)
    qualname: str = target.__qualname__
    name = getattr(target, "__name__", qualname)
    if name == "<lambda>":
        raise InvalidCallError(
            "a lambda cannot be performed by a worker: define a module-level function",
            target=func,
        )
    if "<locals>" in qualname:
        raise InvalidCallError(
            f"{qualname} is a nested function, which a worker cannot import: "
            "define it at module level",
            target=func,
        )
    if not module or module == "__main__":
        raise InvalidCallError(
            f"{qualname} is defined in __main__, which a worker cannot import: "
            "move it into an importable module",
            target=func,
        )
    path = f"{module}:{qualname}"
    try:
        found = resolve_function(module, qualname)
    except FunctionNotFoundError as exc:
        raise InvalidCallError(f"{path} cannot be imported: {exc.reason}", target=func) from exc
    except ForbiddenFunctionError as exc:
        raise InvalidCallError(
            f"{path} cannot be performed by a worker: {exc.reason}", target=func
        ) from exc
    if not _same_function(found, func):
        raise InvalidCallError(
            f"{path} does not name {func!r} (it was replaced or decorated without functools.wraps)",
            target=func,
        )
    return path


def dumps_json(value: object, *, what: str, target: object = None) -> str:
    """Serialise with the message serializer's JSON (kombu's), raising a typed error.

    Structures nested deeper than :data:`~hfcelery.validation.MAX_ARGUMENT_DEPTH` are refused:
    Celery's worker cannot take them. So is a dict whose keys are exactly ``__type__`` and
    ``__value__``: kombu's JSON reads it back as a value of another type (or refuses it).
    """
    problem = argument_problem(value, MAX_ARGUMENT_DEPTH + 1)
    if problem == TYPE_MARKER:
        raise ArgumentSerializationError(
            f"{what} hold a dict whose only keys are '__type__' and '__value__': Celery's JSON "
            "(kombu) reads such a dict back as a typed value, not as the dict; give it "
            "another key or another shape",
            target=target,
            value=value,
        )
    if problem is not None:
        raise ArgumentSerializationError(
            f"{what} nest deeper than {MAX_ARGUMENT_DEPTH} levels (or contain a cycle)",
            target=target,
            value=value,
        )
    try:
        return to_json(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ArgumentSerializationError(
            f"{what} cannot be carried as JSON: {exc}", target=target, value=value
        ) from exc


def load_function(path: str, allowed: Callable[[str], bool]) -> Callable[..., Any]:
    """Import the function a job names, in a worker; raise unless it may run.

    A job may call only a function, or a static or class method of a class, that is *defined*
    in an allowed module under exactly the name the path gives (see :func:`resolve_function`).
    The module is checked before it is imported, so a forbidden module's import-time code never
    runs, and nothing reached through another module, an instance or a dunder name is called.
    """
    if not isinstance(path, str) or path.count(":") != 1:
        raise FunctionNotFoundError(repr(path)[:300], "expected 'module:qualname'")
    module, qualname = path.split(":")
    problem = _problem_with_names(module, qualname)
    if problem is not None:
        raise ForbiddenFunctionError(path, module, problem)
    if not allowed(module):
        raise ForbiddenFunctionError(path, module)
    return resolve_function(module, qualname)


def resolve_function(module: str, qualname: str) -> Callable[..., Any]:
    """The function ``module:qualname`` names, if it is defined there under that name.

    Every dotted part but the last must be a class defined in ``module`` (its ``__module__``
    and ``__qualname__`` match the path); the last must be a function defined under the whole
    qualname, or a static or class method of that class. Lookups read the module's and the
    classes' own namespaces, so no ``__getattr__`` or descriptor of another object runs.
    Raises :class:`ForbiddenFunctionError` for anything else, :class:`FunctionNotFoundError`
    when a name does not exist.
    """
    path = f"{module}:{qualname}"
    known = _RESOLVED.get(path)
    if known is not None:
        found_in, raw_found, resolved = known
        if sys.modules.get(module) is found_in and vars(found_in).get(qualname) is raw_found:
            return resolved  # checked before, and the module still holds the same function
    problem = _problem_with_names(module, qualname)
    if problem is not None:
        raise ForbiddenFunctionError(path, module, problem)
    try:
        # As Celery imports a worker's task modules: from its working directory too (a job
        # module beside the app's, which Celery finds there only while importing).
        namespace: object = sys.modules.get(module) or import_from_cwd(module)
    except ImportError as exc:
        raise FunctionNotFoundError(path, str(exc)) from exc
    parts = qualname.split(".")
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[: depth + 1])
        try:
            raw = (
                vars(namespace)[part]
                if inspect.ismodule(namespace)
                else inspect.getattr_static(namespace, part)
            )
        except (KeyError, AttributeError):
            raise FunctionNotFoundError(path, f"{prefix!r} does not exist in {module}") from None
        last = depth == len(parts) - 1
        if not last:
            if not inspect.isclass(raw) or not _defined_as(raw, module, prefix):
                raise ForbiddenFunctionError(
                    path, module, f"{prefix!r} is not a class defined in {module}"
                )
            namespace = raw
            continue
        if isinstance(raw, staticmethod | classmethod):
            target: object = raw.__func__
            if not inspect.isclass(namespace):
                raise ForbiddenFunctionError(path, module, f"{prefix!r} is not a function")
            func: Any = getattr(namespace, part)  # binds a classmethod to its class
        elif depth == 0:
            target = func = raw
        else:
            raise ForbiddenFunctionError(
                path,
                module,
                f"{prefix!r} is a method of instances: only static and class methods of a "
                "class can be jobs",
            )
        if (
            inspect.isclass(target)
            or inspect.ismodule(target)
            or not callable(target)
            or not _defined_as(target, module, qualname)
        ):
            raise ForbiddenFunctionError(
                path, module, f"{prefix!r} is not a function defined in {module} under that name"
            )
        if depth == 0 and inspect.ismodule(namespace):
            _RESOLVED[path] = (namespace, raw, func)
        return cast("Callable[..., Any]", func)
    raise FunctionNotFoundError(path, "expected 'module:qualname'")


#: Module-level functions :func:`resolve_function` found, by path, with the module and the
#: object it held under that name: found again at once while the module holds that object
#: (a worker resolves the same few functions for every job). Only functions that passed every
#: check are kept, so the paths messages name cannot grow it beyond the project's functions.
_RESOLVED: dict[str, tuple[Any, object, Callable[..., Any]]] = {}


def module_allowed(module: str, exact: Iterable[str], prefixes: Iterable[str]) -> bool:
    """Whether ``module`` is one of ``exact`` or inside one of the packages in ``prefixes``."""
    if module in exact:
        return True
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@functools.lru_cache(maxsize=1024)
def _problem_with_names(module: str, qualname: str) -> str | None:
    problem = problem_with_function_path(f"{module}:{qualname}")
    if problem is not None:
        return problem
    for what, name in (("module", module), ("qualified name", qualname)):
        parts = name.split(".")
        if not all(part.isidentifier() for part in parts):
            return f"the {what} {name!r} is not a dotted name of identifiers"
        if any(part.startswith("__") and part.endswith("__") for part in parts):
            return f"the {what} {name!r} has a dunder part"
    return None


def _defined_as(obj: object, module: str, qualname: str) -> bool:
    return (
        getattr(obj, "__module__", None) == module
        and getattr(obj, "__qualname__", None) == qualname
    )


def _same_function(found: object, func: object) -> bool:
    if found is func:
        return True
    found_func = getattr(found, "__func__", found)
    wanted = getattr(func, "__func__", func)
    return found_func is wanted


def _flatten_partial(
    p: functools.partial[Any],
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    # functools.partial already flattens nested partials of plain functions on creation.
    return p.func, tuple(p.args), dict(p.keywords)


def _from_signature(sig: Signature) -> Invocation:
    if type(sig) is not Signature:
        raise InvalidCallError(
            f"cannot enqueue a {type(sig).__name__}: enqueue a single task signature "
            "and use continue_job_with for what follows",
            target=sig,
        )
    if not isinstance(sig.task, str):
        raise InvalidCallError(f"signature {sig!r} has no task name", target=sig)
    for option in ("eta", "countdown"):
        if sig.options.get(option) is not None:
            raise InvalidCallError(
                f"signature option {option!r} is not supported: delays are kept in the store, "
                "use BackgroundJob.schedule",
                target=sig,
            )
    options = {k: v for k, v in sig.options.items() if k in ("queue", "priority")}
    try:
        task = sig.type
    except (KeyError, AttributeError):  # not registered in this process: no decorator options
        task = None
    return _build(
        sig.task,
        sig.task,
        tuple(sig.args),
        dict(sig.kwargs),
        target=sig,
        options=options,
        job_options=options_of(task),
        runs=task,
    )


def _check_arguments_fit(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], path: str
) -> None:
    try:
        signature = _signature(func)
    except (TypeError, ValueError):
        return  # builtins without a signature: the worker will tell
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise InvalidCallError(f"arguments do not fit {path}{signature}: {exc}") from exc


_SIGNATURES: weakref.WeakKeyDictionary[Callable[..., Any], inspect.Signature] = (
    weakref.WeakKeyDictionary()
)


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature(func)``, kept while the function lives (it is read per enqueue)."""
    try:
        return _SIGNATURES[func]
    except (KeyError, TypeError):  # not seen yet, or not weakly referable
        pass
    signature = inspect.signature(func)
    with contextlib.suppress(TypeError):
        _SIGNATURES[func] = signature
    return signature


def _build(
    task_name: str,
    function: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    target: object,
    options: dict[str, Any] | None = None,
    job_options: JobOptions | None = None,
    runs: object = None,
) -> Invocation:
    if not all(isinstance(k, str) for k in kwargs):
        raise ArgumentSerializationError(
            "keyword argument names must be strings", target=target, value=kwargs
        )
    return Invocation(
        task_name=task_name,
        function=function,
        args=args,
        kwargs=kwargs,
        args_json=dumps_json(list(args), what=f"arguments of {function}", target=target),
        kwargs_json=dumps_json(kwargs, what=f"keyword arguments of {function}", target=target),
        options=options or {},
        job_options=job_options or JobOptions(),
        runs=runs,
    )
