"""The embedded engine's threads: sized from the CPUs it may use, backed off when the CPU is shared."""

from __future__ import annotations

from ponder.backends.threads import Governor, cgroup_cpus, usable_cpus


def test_cgroup_quota_bounds_the_cpus(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpus(tmp_path) == 1.5
    n, why = usable_cpus(tmp_path)
    import os

    affinity = len(os.sched_getaffinity(0))
    assert n == min(affinity, 2) and ("quota" in why)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpus(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpus(v1) == 0.5 and usable_cpus(v1)[0] == 1


def feed(g: Governor, t0: float, seconds: float, per_step: float, tokens: int = 4) -> float:
    t = t0
    while t < t0 + seconds:
        t += per_step
        g.step(tokens, per_step, now=t)
    return t


def test_a_collapse_backs_off_one_thread_and_a_later_trial_keeps_what_is_faster():
    applied: list[int] = []
    g = Governor(threads=2, set_threads=applied.append, retry_s=10.0, window_s=1.0)
    t = feed(g, 0.0, 3.0, 0.02)             # quiet: 4 tokens in 20 ms
    assert applied == [] and g.rate > 150
    t = feed(g, t, 3.0, 0.5)                # a busy neighbour: 25x slower for the same batch
    assert applied == [1] and g.threads == 1
    t = feed(g, t, 11.0, 0.04)              # one thread, the neighbour still there: 2x the quiet step
    assert applied == [1, 2]                # after retry_s it tries two threads again...
    t = feed(g, t, 1.5, 0.5)                # ...which collapse again
    assert applied == [1, 2, 1] and g.threads == 1


def test_ordinary_variation_does_not_move_the_threads():
    applied: list[int] = []
    g = Governor(threads=2, set_threads=applied.append)
    t = feed(g, 0.0, 3.0, 0.02)
    t = feed(g, t, 5.0, 0.03)               # 1.5x slower (a longer context): not a collapse
    feed(g, t, 3.0, 0.05, tokens=1)         # one sequence left: its own batch size, its own best
    assert applied == []
