"""How every benchmark times: warm-up, then the median of timed runs or windows.

Medians are robust to the odd slow run on a shared host; :func:`interleaved` times several
variants in alternating windows (A B A B ...), so that a drift of the host's speed between
runs hits every variant alike.
"""
import time


def timed(fn, runs, warmup):
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls after ``warmup``."""
    return median(run_times(fn, runs, warmup))


def run_times(fn, runs, warmup):
    """Wall times of ``runs`` calls of ``fn()`` in milliseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def window_rates(step, items_per_step, steps, windows, warmup, sync=lambda: None):
    """Items/s of ``step()`` in each of ``windows`` windows of ``steps`` steps (after
    ``warmup`` untimed steps); ``sync()`` waits for the device at each window's ends."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(windows):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        rates.append(steps * items_per_step / (time.perf_counter() - start))
    return rates


def median(values):
    values = sorted(values)
    return float(values[len(values) // 2])


def interleaved(steps_by_variant, items_per_step, steps, windows, warmup):
    """{variant: median items/s}, the variants' timed windows alternating.

    Args:
      steps_by_variant: {name: step fn}.
      items_per_step: items (images) one step processes.
      steps, windows, warmup: steps per window, timed windows, untimed steps per variant.
    """
    for step in steps_by_variant.values():
        for _ in range(warmup):
            step()
    rates = {name: [] for name in steps_by_variant}
    for _ in range(windows):
        for name, step in steps_by_variant.items():
            rates[name] += window_rates(step, items_per_step, steps, 1, 0)
    return {name: median(values) for name, values in rates.items()}
