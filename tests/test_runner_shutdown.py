"""The local runner's SDK processes are stopped together (pipeline/runner_shutdown.py)."""

from __future__ import annotations

import logging
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.testing.util import assert_that, equal_to

from pipeline import runner_shutdown


@pytest.fixture
def beam_close_all(monkeypatch):
    """Beam's own close_all for the test (a launcher run in an earlier test patched it),
    the current one restored after it."""
    current = worker_handlers.WorkerHandlerManager.close_all
    monkeypatch.setattr(worker_handlers.WorkerHandlerManager, "close_all",
                        getattr(current, "_original", current))


class SlowHandler:
    """Exits like an SDK process holding a GPU: it takes a while."""

    def __init__(self, seconds: float, fail: bool = False) -> None:
        self.seconds, self.fail = seconds, fail
        self.closed_by = None

    def close(self) -> None:
        time.sleep(self.seconds)
        self.closed_by = threading.current_thread().name
        if self.fail:
            raise RuntimeError("worker exited with 1")


class GrpcServer:
    closed = False

    def close(self) -> None:
        self.closed = True


def manager_with(handlers):
    manager = object.__new__(worker_handlers.WorkerHandlerManager)
    manager._cached_handlers = {"env": list(handlers)}
    manager._workers_by_id = {i: h for i, h in enumerate(handlers)}
    manager._grpc_server = GrpcServer()
    return manager


def test_workers_close_together_and_a_failing_one_is_logged(beam_close_all, caplog):
    assert runner_shutdown.apply() is True
    assert runner_shutdown.apply() is False                   # once
    handlers = [SlowHandler(0.3) for _ in range(7)] + [SlowHandler(0.3, fail=True)]
    manager = manager_with(handlers)
    server = manager._grpc_server
    start = time.perf_counter()
    with caplog.at_level(logging.ERROR):
        manager.close_all()
    elapsed = time.perf_counter() - start
    assert elapsed < 0.3 * len(handlers) / 2, elapsed         # Beam's loop: 2.4 s
    assert all(h.closed_by and h.closed_by.startswith("close-worker") for h in handlers)
    assert "Error closing worker_handler" in caplog.text and "exited with 1" in caplog.text
    assert manager._workers_by_id == {} and not manager._cached_handlers and server.closed
    assert manager._grpc_server is None


def test_a_close_all_of_another_shape_is_left_alone(monkeypatch):
    def close_all(self):
        self.something_else()

    monkeypatch.setattr(worker_handlers.WorkerHandlerManager, "close_all", close_all)
    assert runner_shutdown.apply() is False
    assert worker_handlers.WorkerHandlerManager.close_all is close_all


def test_a_multi_process_run_finishes_with_it(beam_close_all):
    runner_shutdown.apply()
    options = PipelineOptions(["--direct_num_workers=4", "--direct_running_mode=multi_processing"])
    with beam.Pipeline(options=options) as p:
        total = (p | beam.Create(range(200)) | beam.Reshuffle() | beam.Map(lambda x: x * 2)
                 | beam.CombineGlobally(sum))
        assert_that(total, equal_to([2 * sum(range(200))]))
