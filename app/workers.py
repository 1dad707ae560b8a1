"""Background work: functions run on the thread pool and report back through Qt signals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class WorkerSignals(QObject):
    returned = Signal(object)
    errored = Signal(object)  # the exception
    finished = Signal()


class Worker(QRunnable):
    """Run `function(*args)` off the UI thread; exactly one of returned/errored, then finished."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        super().__init__()
        self.function = function
        self.args = args
        self.signals = WorkerSignals()

    def run(self) -> None:
        try:
            result = self.function(*self.args)
        except Exception as exc:  # delivered to the UI as a message, never lost
            self.signals.errored.emit(exc)
        else:
            self.signals.returned.emit(result)
        finally:
            self.signals.finished.emit()


# Most work here waits on the network or the disk (PACS, edge checks, the keyring, loading): with one thread per
# core (Qt's default, 2 here) an Analyze all and a retrieve would hold up a dialog's quick check until they end.
POOL_THREADS = 8


def start(worker: Worker, keep: set[Worker] | None = None) -> Worker:
    """Run `worker` on the pool. `keep` holds it (and so its signals) alive until it has finished."""
    if keep is not None:
        keep.add(worker)
        worker.signals.finished.connect(lambda: keep.discard(worker))
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < POOL_THREADS:
        pool.setMaxThreadCount(POOL_THREADS)
    pool.start(worker)
    return worker
