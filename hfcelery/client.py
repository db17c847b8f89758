"""Creating and managing jobs: ``BackgroundJobClient`` and the ``BackgroundJob`` facade."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from celery import Celery
from celery._state import get_current_app

from hfcelery.calls import PERFORM_TASK_NAME, Invocation, to_invocation
from hfcelery.extension import extension_of
from hfcelery.jsonutil import from_json
from hfcelery.records import Dispatch, NewJob
from hfcelery.states import State

#: Message header marking a message whose job hfcelery has written already.
JOB_HEADER = "hfcelery_job"

_ALL_BUT = {s: tuple(x for x in State if x is not s) for s in State}


def publish(app: Celery, dispatch: Dispatch) -> None:
    """Send a job's Celery message, with the job id as the task id."""
    args = from_json(dispatch.args_json)
    if dispatch.task_name == PERFORM_TASK_NAME:
        args = [dispatch.function, *args]
    app.send_task(
        dispatch.task_name,
        args=args,
        kwargs=from_json(dispatch.kwargs_json),
        task_id=dispatch.id,
        queue=dispatch.queue,
        headers={JOB_HEADER: True},
    )


class BackgroundJobClient:
    """Creates and manages jobs for one Celery app (which must have ``init_app`` applied)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._extension = extension_of(app)

    def enqueue(self, the_call: object, *, queue: str | None = None) -> str:
        """Create a fire-and-forget job and send it to a worker; return its id.

        ``the_call`` is ``hfcelery.call(func, *args, **kwargs)``, a ``functools.partial``, a
        Celery signature, or a callable that takes no arguments. It is validated (importable,
        arguments fit and are JSON) before anything is written. The job is written Enqueued and
        its message sent with the job id as the Celery task id. If the broker is unreachable,
        the job is kept and a worker publishes it later.
        """
        invocation = to_invocation(the_call)
        queue = queue or invocation.options.get("queue") or self._default_queue(invocation)
        job = NewJob(
            id=str(uuid4()),
            function=invocation.function,
            task_name=invocation.task_name,
            args_json=invocation.args_json,
            kwargs_json=invocation.kwargs_json,
            queue=queue,
            state=State.ENQUEUED,
            data={"queue": queue},
        )
        self._extension.store.create_job(job, self._publish)
        return job.id

    def delete(self, job_id: str, *, expected_state: State | str | None = None) -> bool:
        """Move a job to Deleted (a deleted Enqueued job does not run); True if applied."""
        return self._extension.store.change_state(
            job_id,
            State.DELETED,
            reason="Deleted by request",
            expected_state=_state_or_none(expected_state),
            from_states=_ALL_BUT[State.DELETED],
            retention=timedelta(seconds=self._extension.config.deleted_retention_seconds),
        )

    def requeue(self, job_id: str, *, expected_state: State | str | None = None) -> bool:
        """Move a job to Enqueued and send it again; True if applied."""
        return self._extension.store.change_state(
            job_id,
            State.ENQUEUED,
            reason="Requeued by request",
            expected_state=_state_or_none(expected_state),
            from_states=_ALL_BUT[State.ENQUEUED],
            publish=self._publish,
        )

    def _publish(self, dispatch: Dispatch) -> None:
        publish(self.app, dispatch)

    def _default_queue(self, invocation: Invocation) -> str:
        route = self.app.amqp.router.route({}, invocation.task_name, invocation.args)
        queue = route.get("queue")
        return str(getattr(queue, "name", queue) or self.app.conf.task_default_queue)


def _state_or_none(state: State | str | None) -> State | None:
    return None if state is None else State(state)


class _BackgroundJobFacade:
    """``BackgroundJob``: the methods of :class:`BackgroundJobClient` for the current app."""

    @staticmethod
    def client() -> BackgroundJobClient:
        """The client of the current Celery app."""
        return extension_of(get_current_app()).client

    def enqueue(self, the_call: object, *, queue: str | None = None) -> str:
        return self.client().enqueue(the_call, queue=queue)

    def delete(self, job_id: str, *, expected_state: State | str | None = None) -> bool:
        return self.client().delete(job_id, expected_state=expected_state)

    def requeue(self, job_id: str, *, expected_state: State | str | None = None) -> bool:
        return self.client().requeue(job_id, expected_state=expected_state)

    enqueue.__doc__ = BackgroundJobClient.enqueue.__doc__
    delete.__doc__ = BackgroundJobClient.delete.__doc__
    requeue.__doc__ = BackgroundJobClient.requeue.__doc__


#: Static facade over the client of the current Celery app, as Hangfire's ``BackgroundJob``.
BackgroundJob = _BackgroundJobFacade()
