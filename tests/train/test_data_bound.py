"""The data-bound report: the step timer on a mocked clock (the wait for a batch is the time between the callbacks
of one step and the start of the next, the first step is start-up), and the hint when the loader bounds the run.
A real run prints the line too: tests/train/test_probe.py."""

from selfsup.train.throughput import BOUND_SHARE, StepTimer

HINTS = ["more --num-workers (now 1)", "a smaller --image-size (now 224)"]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def timed_run(compute: float, wait: float, steps: int = 5, callbacks: float = 0.5) -> StepTimer:
    """`steps` steps of `compute` s, each waiting `wait` s for its batch, the other callbacks taking `callbacks` s."""
    clock = Clock()
    timer = StepTimer(clock)
    timer.on_train_start(None, None)
    for i in range(steps):
        clock.now += 10.0 if i == 0 else wait  # the first batch: workers starting, never counted
        timer.on_train_batch_start(None, None, None, i)
        clock.now += compute
        timer.on_train_batch_end(None, None, None, None, i)
        clock.now += callbacks  # checkpoints, the probe: neither compute nor wait
        timer.tail.on_train_batch_end(None, None, None, None, i)
    return timer


def test_a_loader_bound_run_is_named_with_the_hints():
    timer = timed_run(compute=0.1, wait=0.3)
    assert timer.steps == 4 and abs(timer.compute - 0.4) < 1e-9 and abs(timer.wait - 1.2) < 1e-9
    line = timer.report(batch=64, noun="images", hints=HINTS)
    assert line == ("160 images/s over 4 timed steps; 75% of the step time waiting for data: the loader bounds this "
                    "run; try more --num-workers (now 1), or a smaller --image-size (now 224)")


def test_a_compute_bound_run_gets_no_hint():
    line = timed_run(compute=0.2, wait=0.02).report(batch=32, noun="examples", hints=HINTS)
    assert line == "145 examples/s over 4 timed steps; 9% of the step time waiting for data"
    assert BOUND_SHARE == 0.3


def test_nothing_to_report_before_a_second_step():
    assert timed_run(compute=0.1, wait=0.3, steps=1).report(batch=8, noun="images", hints=HINTS) is None
