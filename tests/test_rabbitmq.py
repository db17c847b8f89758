"""The same job model on RabbitMQ: a real worker consuming from the real RabbitMQ broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

import hfcelery
from hfcelery import BackgroundJobClient, State, call
from tests import jobs
from tests.conftest import RABBITMQ_URL, StartWorker, port_open, service_missing, wait_for

pytestmark = pytest.mark.acceptance

#: Any worker of this module may hold the maintenance lease, so all send lost jobs again soon.
WORKER_ENV = {"HF_TEST_BROKER_URL": RABBITMQ_URL, "HF_TEST_REPUBLISH_AFTER": "2"}


@pytest.fixture(scope="module")
def rabbit_app(test_env: dict[str, str]) -> Iterator[Celery]:
    if not port_open("127.0.0.1", 5672):
        service_missing("RabbitMQ", "127.0.0.1:5672 refused the connection")
    app = Celery("hftests-rabbit", broker=RABBITMQ_URL, set_as_current=False)
    app.conf.task_default_queue = test_env["HF_TEST_QUEUE"] + "-amqp"
    extension = hfcelery.init_app(app, store_url=test_env["HF_TEST_STORE_URL"])
    yield app
    extension.store.dispose()


def test_jobs_run_through_rabbitmq(
    rabbit_app: Celery, start_worker: StartWorker, side_effects: object
) -> None:
    queue = rabbit_app.conf.task_default_queue
    worker = start_worker(queues=queue, env=WORKER_ENV)
    api = hfcelery.monitoring(rabbit_app)
    token = uuid.uuid4().hex
    job_id = BackgroundJobClient(rabbit_app).enqueue(call(jobs.record, token))
    plain_id = rabbit_app.send_task("tests.add", args=(2, 3)).id
    for expected, jid in ((job_id, job_id), (plain_id, plain_id)):
        job = wait_for(
            lambda jid=jid: (j := api.find_job(jid)) and j.state is State.SUCCEEDED and j,
            what=f"job {expected} to succeed on RabbitMQ",
        )
        assert [h.state for h in job.history] == [
            State.ENQUEUED, State.PROCESSING, State.SUCCEEDED,
        ]  # fmt: skip
        assert job.history[1].data["server_id"].startswith(worker.hostname)
    assert api.job(plain_id).history[-1].data["result"] == 5


def test_jobs_whose_queue_rabbitmq_forgot_are_sent_again(
    rabbit_app: Celery, start_worker: StartWorker, side_effects: Any
) -> None:
    """A RabbitMQ restart forgets a non-durable queue with its messages. The shared broker is
    not restarted here: the queue is deleted, as the restart would. The store still has the
    jobs Enqueued, and they are sent again and run once each."""
    queue = rabbit_app.conf.task_default_queue + "-lost"
    client = BackgroundJobClient(rabbit_app)
    token = uuid.uuid4().hex
    job_ids = [client.enqueue(call(jobs.record, token), queue=queue) for _ in range(3)]
    with rabbit_app.connection_for_write() as conn:
        assert conn.default_channel.queue_delete(queue) == 3  # the messages go with it
    start_worker(queues=queue, env=WORKER_ENV)
    api = hfcelery.monitoring(rabbit_app)
    for job_id in job_ids:
        wait_for(
            lambda job_id=job_id: (j := api.find_job(job_id)) and j.state is State.SUCCEEDED,
            timeout=60,
            what=f"lost job {job_id} to be sent again and succeed",
        )
    assert side_effects.llen(f"hftests:{token}") == len(job_ids)


def test_enqueue_many_declares_a_new_queue_and_sends_every_message(rabbit_app: Celery) -> None:
    """A batch to a queue RabbitMQ does not know yet: declared once, before the messages (an
    undeclared queue would drop them), and every message arrives."""
    queue = f"{rabbit_app.conf.task_default_queue}-batch-{uuid.uuid4().hex[:6]}"
    ids = BackgroundJobClient(rabbit_app).enqueue_many(
        (call(jobs.multiply, i, 2) for i in range(25)), queue=queue
    )
    assert len(ids) == 25
    client = BackgroundJobClient(rabbit_app)
    with rabbit_app.connection_for_write() as conn:
        channel = conn.default_channel
        try:
            _, count, _ = channel.queue_declare(queue=queue, passive=True)
            assert count == 25
        finally:
            channel.queue_delete(queue=queue)
            # Deleted: no worker sends them again (which would declare the queue anew).
            assert all(client.delete(job_id) for job_id in ids)


def test_a_batch_the_store_refuses_sends_nothing_through_rabbitmq(rabbit_app: Celery) -> None:
    """RabbitMQ publishes each message at once (no batch to hold them): the batch's insert is
    waited for before the first one, and a single job's before its message, so a batch or a
    job the store refuses sends nothing."""
    from functools import partial

    from hfcelery.errors import StoreDataError
    from hfcelery.extension import extension_of
    from hfcelery.publishing import publish, publish_many
    from tests.test_store import new_job

    queue = f"{rabbit_app.conf.task_default_queue}-refused-{uuid.uuid4().hex[:6]}"
    store = extension_of(rabbit_app).store
    good = new_job(queue=queue)
    batch = [good, new_job(queue=queue, function="f\x00")]
    with pytest.raises(StoreDataError):
        store.create_jobs(batch, partial(publish_many, rabbit_app))
    assert store.job(good.id) is None
    # A single enqueue's message waits for its insert the same way.
    with pytest.raises(StoreDataError):
        store.create_job(new_job(queue=queue, function="f\x00"), partial(publish, rabbit_app))
    with rabbit_app.connection_for_write() as conn:
        channel = conn.default_channel
        try:
            _, count, _ = channel.queue_declare(queue=queue, passive=True)
            assert count == 0
        except Exception as exc:  # never declared: nothing was sent either
            assert "NOT_FOUND" in str(exc) or "404" in str(exc), exc
        else:
            channel.queue_delete(queue=queue)


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_the_queues_page_counts_each_broker_queue(
    broker: str, rabbit_app: Celery, redis_url: str, test_env: dict[str, str]
) -> None:
    """Messages waiting in each queue: 0 for an empty Redis queue (Redis keeps no empty list)
    and for a queue the broker does not know; on RabbitMQ that one leaves the others counted
    (a failed check closes its AMQP channel)."""
    from kombu import Exchange, Queue

    app = rabbit_app
    if broker == "redis":
        app = Celery("hftests-queues", broker=redis_url, set_as_current=False)
        hfcelery.init_app(app, store_url=test_env["HF_TEST_STORE_URL"])
    tag = uuid.uuid4().hex[:8]
    full, empty, missing = f"qlen-full-{tag}", f"qlen-empty-{tag}", f"qlen-missing-{tag}"
    with app.connection_for_write() as conn:
        for name, messages in ((full, 2), (empty, 0)):
            queue = Queue(name, Exchange(name), name, auto_delete=True)(conn.default_channel)
            queue.declare()
            with conn.Producer() as producer:
                for _ in range(messages):
                    producer.publish({"n": 1}, exchange=name, routing_key=name, declare=[queue])
        try:
            lengths = hfcelery.monitoring(app).broker_queue_lengths([missing, full, empty])
            assert lengths == {missing: 0, full: 2, empty: 0}
        finally:
            for name in (full, empty):
                conn.default_channel.queue_delete(name)
