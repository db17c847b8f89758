"""Validation and serialisation of *the call*, before anything is written or sent."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import os

import pytest
from celery import Celery, chain

from hfcelery.calls import (
    PERFORM_TASK_NAME,
    call,
    function_path,
    load_function,
    module_allowed,
    to_invocation,
)
from hfcelery.errors import (
    ArgumentSerializationError,
    ForbiddenFunctionError,
    FunctionNotFoundError,
    InvalidCallError,
)
from hfcelery.jsonutil import from_json
from tests import jobs

celery_app = Celery("calls-test", set_as_current=False)


@celery_app.task(name="calls.send_email")
def send_email(address: str, subject: str = "hi") -> None:
    """A Celery task, enqueued by signature or by call()."""


def test_call_of_plain_function() -> None:
    inv = to_invocation(call(jobs.multiply, 3, y=4))
    assert inv.task_name == PERFORM_TASK_NAME
    assert inv.function == "tests.jobs:multiply"
    assert inv.args == (3,)
    assert inv.kwargs == {"y": 4}
    assert from_json(inv.args_json) == [3]
    assert from_json(inv.kwargs_json) == {"y": 4}
    assert inv.message_args() == ("tests.jobs:multiply", 3)


def test_partial_is_flattened() -> None:
    inv = to_invocation(functools.partial(functools.partial(jobs.record, "tok"), value="v"))
    assert (inv.function, inv.args, inv.kwargs) == ("tests.jobs:record", ("tok",), {"value": "v"})


def test_zero_argument_callable() -> None:
    inv = to_invocation(jobs.no_arguments)
    assert (inv.function, inv.args, inv.kwargs) == ("tests.jobs:no_arguments", (), {})


def test_zero_argument_form_rejects_function_needing_arguments() -> None:
    with pytest.raises(InvalidCallError, match="arguments do not fit"):
        to_invocation(jobs.multiply)


def test_wrong_arguments_are_rejected_at_enqueue() -> None:
    with pytest.raises(InvalidCallError, match="unexpected keyword"):
        to_invocation(call(jobs.multiply, 1, 2, z=3))


def test_classmethod_and_staticmethod_are_importable() -> None:
    assert to_invocation(call(jobs.Reports.build, "x")).function == "tests.jobs:Reports.build"
    static = to_invocation(call(jobs.Reports.static_build, "x"))
    assert static.function == "tests.jobs:Reports.static_build"


def test_celery_signature() -> None:
    inv = to_invocation(send_email.s("a@example.org", subject="s").set(queue="mail"))
    assert inv.task_name == inv.function == "calls.send_email"
    assert inv.args == ("a@example.org",)
    assert inv.kwargs == {"subject": "s"}
    assert inv.options == {"queue": "mail"}
    assert inv.message_args() == ("a@example.org",)


def test_celery_task_in_call() -> None:
    inv = to_invocation(call(send_email, "a@example.org"))
    assert (inv.task_name, inv.args) == ("calls.send_email", ("a@example.org",))


def test_lambda_is_rejected() -> None:
    with pytest.raises(InvalidCallError, match="lambda"):
        to_invocation(lambda: None)


def test_nested_function_is_rejected() -> None:
    def inner() -> None:
        pass

    with pytest.raises(InvalidCallError, match="nested function"):
        to_invocation(inner)


def test_bound_method_of_instance_is_rejected() -> None:
    class Mailer:
        def send(self) -> None:
            pass

    with pytest.raises(InvalidCallError, match="bound to an instance"):
        to_invocation(Mailer().send)


def test_function_in_main_is_rejected() -> None:
    def main_function() -> None:
        pass

    main_function.__module__ = "__main__"
    main_function.__qualname__ = "main_function"
    with pytest.raises(InvalidCallError, match="__main__"):
        function_path(main_function)


def test_function_that_does_not_resolve_to_itself_is_rejected() -> None:
    def impostor(x: float, y: float) -> float:
        return x

    impostor.__module__, impostor.__qualname__ = "tests.jobs", "multiply"
    with pytest.raises(InvalidCallError, match="does not name"):
        function_path(impostor)


def test_a_function_found_before_is_looked_up_again_once_its_module_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resolved functions are remembered per path, but only while their module holds the
    same object under that name: a replaced, removed or reloaded one is looked up again."""
    import sys
    import types

    module = types.ModuleType("hf_resolve_probe")

    def make(body: int) -> object:
        def job() -> int:
            return body

        job.__module__, job.__qualname__ = "hf_resolve_probe", "job"
        return job

    first, second = make(1), make(2)
    module.job = first  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hf_resolve_probe", module)
    everything = lambda _: True  # noqa: E731
    assert load_function("hf_resolve_probe:job", everything) is first
    assert function_path(first) == "hf_resolve_probe:job"
    module.job = second  # type: ignore[attr-defined]  # replaced (a reload, a patch)
    assert load_function("hf_resolve_probe:job", everything) is second
    with pytest.raises(InvalidCallError, match="does not name"):
        function_path(first)
    del module.job
    with pytest.raises(FunctionNotFoundError):
        load_function("hf_resolve_probe:job", everything)
    reloaded = types.ModuleType("hf_resolve_probe")
    reloaded.job = second  # type: ignore[attr-defined]  # same object, another module
    monkeypatch.setitem(sys.modules, "hf_resolve_probe", reloaded)
    assert load_function("hf_resolve_probe:job", everything) is second
    # The allow list is asked on every load, remembered or not.
    with pytest.raises(ForbiddenFunctionError):
        load_function("hf_resolve_probe:job", lambda _: False)


def test_canvas_is_rejected() -> None:
    with pytest.raises(InvalidCallError, match="chain"):
        to_invocation(chain(send_email.s("a"), send_email.si("b")))


def test_signature_countdown_is_rejected() -> None:
    with pytest.raises(InvalidCallError, match="countdown"):
        to_invocation(send_email.s("a").set(countdown=10))


def test_not_a_call_is_rejected() -> None:
    with pytest.raises(InvalidCallError, match="cannot enqueue"):
        to_invocation("tests.jobs:multiply")


@pytest.mark.parametrize(
    "bad",
    [object(), {1, 2}, os, 1 + 2j],
    ids=["object", "set", "module", "complex"],
)
def test_arguments_json_cannot_carry_are_rejected(bad: object) -> None:
    with pytest.raises(ArgumentSerializationError) as info:
        to_invocation(call(jobs.record, "token", value=bad))
    assert info.value.value == {"value": bad}


def test_json_types_of_the_message_serializer_are_accepted() -> None:
    """kombu's JSON carries datetimes and decimals (and reads them back); so does the store."""
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    inv = to_invocation(call(jobs.record, when, value=decimal.Decimal("1.5")))
    assert from_json(inv.args_json) == [when]
    assert from_json(inv.kwargs_json) == {"value": decimal.Decimal("1.5")}


def test_load_function_checks_module_before_import() -> None:
    allowed = functools.partial(module_allowed, exact={"tests.app"}, prefixes=("tests.jobs",))
    assert load_function("tests.jobs:multiply", allowed) is jobs.multiply
    with pytest.raises(ForbiddenFunctionError) as info:
        load_function("os:system", allowed)
    assert info.value.module == "os"
    with pytest.raises(ForbiddenFunctionError):
        load_function("tests.jobsevil:x", allowed)
    with pytest.raises(FunctionNotFoundError):
        load_function("tests.jobs:missing", allowed)
    with pytest.raises(FunctionNotFoundError):
        load_function("no-colon", allowed)


def test_module_allowed_matches_packages_not_prefixes_of_names() -> None:
    assert module_allowed("proj.jobs.mail", (), ("proj",))
    assert module_allowed("proj", (), ("proj",))
    assert not module_allowed("project", (), ("proj",))
    assert module_allowed("proj.tasks", ("proj.tasks",), ())
    assert not module_allowed("proj.tasks.sub", ("proj.tasks",), ())
