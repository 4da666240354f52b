"""Load the model as an SDK process starts, while the run's first stages list and shuffle.

Why: a worker process loads its model when the scoring stage first reaches it
(RunInference's setup), and only after the input listing and the anti-join's shuffle are
done. On the H200 that put 16-18 s of loading (16 processes building engines and DALI
pipelines at once) behind 13 s (50,000 URIs) to 44 s (1,000,000 URIs) of stages that
keep one process busy and the other fifteen idle (docs/benchmarks.md, 2026-11-30 third
session).

How: Beam imports the modules named by ``--beam_plugins`` in every SDK process before it
runs any bundle, on the local runner and on Dataflow. The launcher names this module and
puts the scoring stage's loader, pickled, in the pipeline option ``--prewarm_loader``. At
import, this module reads the process's pipeline options (Beam hands them over in the
``PIPELINE_OPTIONS`` environment variable or a file named by ``PIPELINE_OPTIONS_FILE``) and
starts that loader on a thread. The handler's ``load_model`` then takes the loaded runner
(``take``) if its loader is the same, and loads as before if not, or if the early load
failed (the error then comes from the handler's own load, as without prewarming).

Nothing happens in a process without those options: the launcher, tests, an in-process
DirectRunner.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

from transforms.runtime import startup

LOG = logging.getLogger(__name__)
MODULE = __name__                 # what the launcher adds to --beam_plugins
OPTION = "prewarm_loader"         # the pipeline option holding the pickled loader
_PORTABLE = re.compile(r"^beam:option:(?P<key>.*):v1$")

_lock = threading.Lock()
_pending: List[Tuple[Any, "Future[Any]"]] = []     # (loader, its load), at most a few


def encode(loader: Callable[[], Any]) -> str:
    """The loader as an option value (a frozen dataclass pickles to a few hundred bytes)."""
    return base64.b64encode(pickle.dumps(loader)).decode("ascii")


def decode(value: str) -> Callable[[], Any]:
    return pickle.loads(base64.b64decode(value))


def start(loader: Callable[[], Any]) -> bool:
    """Begin loading on a background thread; False if an equal loader is already loading.
    Loaders are frozen dataclasses, compared by value: the handler's copy arrives through
    Beam's pickler, the option's through this module's."""
    with _lock:
        if any(pending == loader for pending, _ in _pending):
            return False
        pool = ThreadPoolExecutor(1, thread_name_prefix="prewarm")
        _pending.append((loader, pool.submit(startup.timed_load, loader, prewarm=True)))
        pool.shutdown(wait=False)
    return True


def take(loader: Callable[[], Any]) -> Optional[Any]:
    """The runner an early load of an equal loader made (waiting for it to finish), or
    None: none was started, or it failed (the caller's own load then raises the error)."""
    with _lock:
        found = next((i for i, (pending, _) in enumerate(_pending) if pending == loader), None)
        if found is None:
            if _pending:
                LOG.warning("prewarm: the model loaded early is not this handler's (%r); "
                            "loading this one at setup", loader)
            return None
        _, future = _pending.pop(found)
    try:
        runner = future.result()
    except Exception as exc:  # noqa: BLE001 - the handler's own load reports it
        LOG.warning("prewarm: the early model load failed (%s: %s); loading again at setup",
                    type(exc).__name__, exc)
        return None
    startup.record("prewarm_taken")
    return runner


def _options_text() -> Optional[str]:
    path = os.environ.get("PIPELINE_OPTIONS_FILE")
    if path:
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return None
    return os.environ.get("PIPELINE_OPTIONS")


def process_options() -> Dict[str, Any]:
    """This SDK process's pipeline options as a flat dict (Beam's JSON: either under
    "options", or portable ``beam:option:<name>:v1`` keys)."""
    text = _options_text()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if "options" in data and isinstance(data["options"], dict):
        return data["options"]
    out = {}
    for key, value in data.items():
        match = _PORTABLE.match(key)
        out[match.group("key") if match else key] = value
    return out


def start_from_process_options() -> bool:
    """Start the loader the launcher put in the options, if any; never fails the process
    (a bad value is logged and the handler loads at setup as usual)."""
    value = process_options().get(OPTION)
    if not value:
        return False
    try:
        return start(decode(value))
    except Exception as exc:  # noqa: BLE001 - see the docstring
        LOG.warning("prewarm: cannot start the early model load (%s: %s)",
                    type(exc).__name__, exc)
        return False


start_from_process_options()
