"""Hand-made task messages (task protocol 2), published raw to the real broker: what anybody
who can reach the broker could send, and how a broker's redelivery of a message looks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from hfcelery.calls import JOB_HEADER, PERFORM_TASK_NAME

#: Leaves a header out of a forged message.
MISSING = object()
_FRESH_ID = object()


@dataclass
class Forger:
    """Publishes hand-made task messages to the test queue on the real broker."""

    app: Any
    queue: str

    def send(
        self,
        task: str,
        args: Any = (),
        kwargs: Any = None,
        *,
        task_id: Any = _FRESH_ID,
        body: Any = MISSING,
        **headers: Any,
    ) -> Any:
        """Publish one message; return its id (a fresh uuid unless ``task_id`` is given;
        ``MISSING`` leaves it out)."""
        if task_id is _FRESH_ID:
            task_id = str(uuid.uuid4())
        message_headers: dict[str, Any] = {
            "lang": "py",
            "task": task,
            "id": task_id,
            "root_id": None if task_id is MISSING else task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "timelimit": [None, None],
            "origin": "forger@localhost",
        }
        message_headers.update(headers)
        for key in [k for k, v in message_headers.items() if v is MISSING]:
            del message_headers[key]
        if body is MISSING:
            embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
            body = [list(args), kwargs or {}, embed]
        with self.app.connection_for_write() as conn:
            conn.Producer().publish(
                body,
                exchange="",
                routing_key=self.queue,
                headers=message_headers,
                serializer="json",
                retry=True,
            )
        return task_id

    def perform(self, function: Any, *args: Any, **headers: Any) -> Any:
        """A ``hfcelery.perform`` message, as the client sends for a plain function."""
        return self.send(PERFORM_TASK_NAME, [function, *args], **{JOB_HEADER: True, **headers})

    def queued(self) -> int:
        """Messages still waiting in the test queue."""
        with self.app.connection_for_write() as conn:
            return int(conn.default_channel.client.llen(self.queue))
