"""Judging idle power before a calibration run, and the run's progress bar.

Every node energy would carry any power the machine draws beyond idle, so a
run refuses to start on a machine that is not idle (:func:`judge_idle`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pytest_irene.rig.calibration_plan import CalibrationError, CalibrationSettings, IdleReport


def powers_in(samples: Sequence[Any], t0: float, t1: float, *, kind: str, parts: int = 10) -> list[float]:
    """The power readings over ``[t0, t1]``, W: the reports of a power meter, or the mean
    power over about ``parts`` sub-intervals of a counter meter's readings.

    A power meter's report gives the power of the period before it, so the first report after
    ``t1`` covers the window's end and is one of them: the window's mean energy is integrated
    with it, and without it the printed range could leave out the mean (80.2 W of 87.0-87.0 W)."""
    inside = [x for x in samples if t0 <= x.t_s <= t1]
    if kind == "power":
        after = next((x for x in samples if x.t_s > t1), None)
        return [x.power_w for x in (*inside, *([after] if after is not None else [])) if x.power_w is not None]
    powers, last = [], None
    step = (t1 - t0) / parts
    for x in inside:
        if x.energy_j is None:
            continue
        if last is not None and x.t_s - last.t_s >= step:
            powers.append((x.energy_j - last.energy_j) / (x.t_s - last.t_s))
            last = x
        elif last is None:
            last = x
    return powers


#: Below this a machine is not idle but unmeasured: a CT left unclamped or around the whole cable
#: (live and neutral cancel) reads about 0 W, one clamped the wrong way round a negative power.
MIN_IDLE_POWER_W = 1.0


def judge_idle(m: Any, powers: list[float], cpu: float | None, s: CalibrationSettings, *, wall: bool = True) -> IdleReport:
    """The idle report of measurement ``m``; :class:`CalibrationError` when the machine is not idle, or
    when the meter reads no power at all (``wall``: a CT sensor, whose usual mistakes the message names)."""
    reference = s.idle_power_w if s.idle_power_w is not None else min(powers)
    report = IdleReport(
        power_w=m.power_w,
        reference_w=reference,
        min_power_w=min(powers),
        max_power_w=max(powers),
        reports=m.samples,
        cpu_pct=cpu,
        duration_s=m.duration_s,
    )
    if m.power_w < MIN_IDLE_POWER_W:
        raise CalibrationError(
            f"refusing to calibrate: the meter reads {m.power_w:.1f} W with the machine idle, so every node "
            "would measure nothing. "
            + (
                ("A negative power is a CT sensor clamped the wrong way round: turn it over. " if m.power_w < 0 else "")
                + "Is the CT clamped around the live wire of this machine's supply only (not the whole cable), "
                "and does channels= name the CT it is on (default P1)?"
                if wall
                else "Does the meter read the device the models run on?"
            )
        )
    problems = []
    if reference > 0 and m.power_w > reference * (1 + s.idle_tolerance):
        what = "the rig's idle power" if s.idle_power_w is not None else "the lowest report in the idle window"
        problems.append(
            f"it draws {m.power_w:.1f} W, {100 * (m.power_w / reference - 1):.0f} % above {what} "
            f"({reference:.1f} W; tolerance {100 * s.idle_tolerance:.0f} %)"
        )
    if cpu is not None and cpu > s.idle_cpu_pct:
        problems.append(f"the CPU is {cpu:.0f} % busy (limit {s.idle_cpu_pct:.0f} %)")
    if problems:
        raise CalibrationError(
            "refusing to calibrate: the machine is not idle: "
            + "; ".join(problems)
            + ". Stop other jobs (training, builds, browsers), let it cool down and retry; "
            "raise the idle tolerance only if this load is part of the machine's normal state."
        )
    return report


@contextmanager
def progress_bar(enabled: bool, console: Any, total: int, description: str) -> Iterator[Callable[[str], None]]:
    """``advance(node)`` for a rich progress bar on stderr (or ``console``); a no-op when not ``enabled``."""
    if not enabled:
        yield lambda text: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[node]}"),
    )
    with Progress(*columns, console=console or Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total, node="")

        def advance(node: str) -> None:
            bar.update(task, advance=1, node=node)

        yield advance
