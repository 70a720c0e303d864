"""Is a run bound by its data? The time each training step computes against the time it waits for its batch, and
the one line the run ends with: examples per second, the share of the time spent waiting, and what to change when
the loader takes more than BOUND_SHARE of it."""

import time
from collections.abc import Callable
from typing import Any

import lightning as L

BOUND_SHARE = 0.3  # waiting for data above this share of the step time: the loader bounds the run


class StepTimer(L.Callback):
    """Times every training step but the first (start-up) of a fit. Put it first among the trainer's callbacks and
    its `tail` last:
    - compute: on_train_batch_start -> this callback's on_train_batch_end (forward, backward, optimiser step and
      the method's after_step);
    - wait: the tail's on_train_batch_end of the step before -> on_train_batch_start: the DataLoader's next batch,
      its transfer to the device and the views made there, and Lightning's logging.
    The other callbacks' time (checkpoints, the online probe) counts in neither. `clock` returns seconds."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.compute = self.wait = 0.0
        self.steps = 0
        self._start: float | None = None
        self._ready: float | None = None  # when the callbacks of the step before were done
        self._waited: float | None = None
        self.tail = _AfterCallbacks(self)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._ready = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._start = self.clock()
        self._waited = None if self._ready is None else self._start - self._ready

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._waited is not None and self._start is not None:
            self.compute += self.clock() - self._start
            self.wait += self._waited
            self.steps += 1

    def report(self, batch: int, noun: str, hints: list[str]) -> str | None:
        """'N noun/s; W% of the step time waiting for data' (batch: examples per step on all devices), with `hints`
        when waiting takes more than BOUND_SHARE; None when no step was timed."""
        total = self.compute + self.wait
        if not self.steps or total <= 0:
            return None
        share = self.wait / total
        line = (f"{self.steps * batch / total:,.0f} {noun}/s over {self.steps} timed step{'s' * (self.steps > 1)}; "
                f"{share:.0%} of the step time waiting for data")
        if share > BOUND_SHARE and hints:
            line += f": the loader bounds this run; try {', or '.join(hints)}"
        return line


class _AfterCallbacks(L.Callback):
    """The timer's mark after every other callback's on_train_batch_end: the wait for the next batch starts here."""

    def __init__(self, timer: StepTimer):
        self.timer = timer

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.timer._ready = self.timer.clock()
