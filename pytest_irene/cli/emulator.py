"""``irene emonpi-emulator``: an emonPi on a pseudo-terminal, for trying calibration without a rig.

Prints the pty's device path as the first line of output (so scripts can read
it), then serves reports until interrupted::

    irene emonpi-emulator --format kv --period 0.5 &
    irene calibrate --meter emonpi:/dev/pts/3,115200 ...
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from pytest_irene.rig.calibration_plan import SettingError
from pytest_irene.rig.emulator import FAULTS, FORMATS, EmonPiEmulator
from pytest_irene.rig.meters.emonpi_lines import BAUD


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "emonpi-emulator",
        help="emulate an emonPi power monitor on a pseudo-terminal",
        description="Open a pseudo-terminal speaking the emonPi serial protocol, with power following "
        "this host's CPU utilisation (idle watts + watts-per-util x utilisation). Prints the device "
        "path as the first line, then serves until stopped (Ctrl-C).",
    )
    parser.add_argument("--format", choices=FORMATS, default="kv", help="firmware format (default kv)")
    parser.add_argument("--period", type=float, default=None, metavar="SECONDS",
                        help="seconds between reports (default: the firmware's, 9.8 kv/json, 5 jeelib)")
    parser.add_argument("--idle-watts", type=float, default=60.0, metavar="W", help="power at 0%% CPU (default 60)")
    parser.add_argument("--watts-per-util", type=float, default=140.0, metavar="K",
                        help="extra watts at 100%% CPU utilisation (default 140)")
    parser.add_argument("--fault", choices=FAULTS, default=None, help="inject a fault after --fault-after reports")
    parser.add_argument("--fault-after", type=int, default=None, metavar="N",
                        help="with --fault: good reports before the fault (default 3)")
    parser.set_defaults(func=run)


#: The emulator keyword each option sets, so a refused value names the option.
SETTING_OPTIONS: dict[str, str] = {
    "period_s": "--period", "idle_watts": "--idle-watts", "watts_per_util": "--watts-per-util",
    "fault_after": "--fault-after",
}


def meter_spec(path: str, fmt: str, period_s: float | None) -> str:
    """The ``--meter`` spec that reads this emulator. A ``--period`` other than the firmware's goes in
    too: without it the reader assumes the firmware's 9.8 s (or 5 s) until it has measured the period,
    and waits 30 s before saying that a silent emulator is silent."""
    spec = f"emonpi:{path},{BAUD[fmt]}"
    return spec if period_s is None else f"{spec},period={period_s:g}"


def run(args: argparse.Namespace) -> int:
    from pytest_irene.errors import UsageError

    if args.fault_after is not None and args.fault is None:
        raise UsageError("--fault-after: only with --fault (it says after how many good reports the fault starts)")
    try:
        emulator = EmonPiEmulator(
            args.format,
            period_s=args.period,
            idle_watts=args.idle_watts,
            watts_per_util=args.watts_per_util,
            fault=args.fault,
            **({} if args.fault_after is None else {"fault_after": args.fault_after}),
        )
    except SettingError as exc:
        raise UsageError(f"{SETTING_OPTIONS.get(exc.setting, exc.setting)}: {exc.problem}") from None
    path = emulator.start()
    print(path, flush=True)
    print(
        f"emonPi emulator: {args.format} format, one report every {emulator.period_s:g} s, "
        f"read it with --meter {meter_spec(path, args.format, args.period)}" + (f"; fault: {args.fault}" if args.fault else ""),
        file=sys.stderr,
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: emulator.request_stop())
    try:
        emulator.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the emulator without the rest of the ``irene`` CLI (``python -m pytest_irene.cli.emulator``)."""
    from pytest_irene.cli import IreneParser

    parser = IreneParser(prog="irene")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["emonpi-emulator", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
