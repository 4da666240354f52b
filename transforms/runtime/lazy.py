"""A runner that loads its model on first use, not when Beam sets the DoFn up.

Why: with ``--preprocess gpu`` the Pillow branches (PNG, WebP, DALI's rejects) have
RunInference transforms of their own, and Beam sets up every DoFn of a stage in every SDK
process that runs it, even when the branch gets no input. On an all-JPEG corpus each of 16
processes loaded a second TensorRT engine it never used (2.8 s each, and its device
memory; docs/benchmarks.md, the H200 start-up timeline). Loading on the first batch costs nothing
when there is none. A model that fails to load still fails the bundle (ModelLoadError is
systemic), on the first batch instead of at setup.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from transforms.runtime import startup
from transforms.runtime.errors import ModelLoadError, SystemicError
from transforms.runtime.runner import Feeds, Runner, RunnerInfo


class LazyRunner(Runner):
    """Holds a loader; the first call that needs the model loads it, once, under a lock.
    Every Runner method is delegated, so a MultiProcessShared proxy of it still works."""

    def __init__(self, loader: Callable[[], Runner]) -> None:
        super().__init__()
        self._loader = loader
        self._runner: Optional[Runner] = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._runner is not None

    def _model(self) -> Runner:
        if self._runner is None:
            with self._lock:
                if self._runner is None:
                    try:
                        self._runner = startup.timed_load(self._loader, lazy=True)
                    except SystemicError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - any load failure is systemic
                        raise ModelLoadError(f"loading the model on first use failed: "
                                             f"{type(exc).__name__}: {exc}") from exc
        return self._runner

    def info(self) -> RunnerInfo:
        return self._model().info()

    def infer(self, feeds: Feeds) -> Feeds:
        return self._model().infer(feeds)

    def next_batch_id(self) -> str:
        return self._model().next_batch_id()

    def batch_ceiling(self) -> Optional[int]:
        return self._model().batch_ceiling()

    def lower_batch_ceiling(self, failed_rows: int) -> Optional[int]:
        return self._model().lower_batch_ceiling(failed_rows)

    def close(self) -> None:
        with self._lock:
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    def __getattr__(self, name: str) -> Any:
        # read-only extras of a concrete runner (e.g. OnnxRunner.session), after loading
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._model(), name)
