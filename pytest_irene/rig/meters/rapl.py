"""Intel/AMD RAPL CPU package energy as a meter (``rapl[:SYSFS_DIR]``).

RAPL gives the CPU packages' energy (cores, caches, memory controller), not
the wall power; on a rig it is a strong feature and a usable meter where no
wall meter is at hand. The counter reading itself (top-level package zones,
wrap-around at ``max_energy_range_uj``) is the runtime's
:class:`~pytest_irene.rig.runtime.rapl.RaplCounter`, shared with the resource
sampler; this module adds the meter interface and the user-facing errors.
Since Linux 5.10 the counters are readable by root only (a side channel,
CVE-2020-8694); the error says how to grant access.
"""

from __future__ import annotations

from pathlib import Path

from pytest_irene.rig.runtime.rapl import POWERCAP_DIR, RaplCounter, RaplUnavailable
from pytest_irene.rig.meters.base import MeterError
from pytest_irene.rig.meters.polled import PolledMeter

PERMISSION_HINT = (
    "since Linux 5.10 the RAPL energy counters are readable by root only. Grant read access with "
    "`sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj` (lasts until reboot) or permanently "
    "with a udev rule, e.g. /etc/udev/rules.d/99-irene-rapl.rules containing "
    '`ACTION=="add", SUBSYSTEM=="powercap", KERNEL=="intel-rapl:*", '
    'RUN+="/bin/chmod a+r /sys/class/powercap/%k/energy_uj"`'
)


class RaplMeter(PolledMeter):
    """CPU package energy from RAPL, summed over packages, polled in the background."""

    energy_scope = "cpu-package"

    name = "rapl"

    def __init__(self, root: str | Path = POWERCAP_DIR, *, poll_s: float = 0.1, timeout_s: float | None = None):
        super().__init__(poll_s=poll_s, timeout_s=timeout_s)
        self.root = Path(root)
        self.counter: RaplCounter | None = None

    def _open(self) -> None:
        try:
            self.counter = RaplCounter(self.root)
        except RaplUnavailable as exc:
            message = str(exc)
            if "root only" in message or "ermission" in message:
                raise MeterError(f"rapl: {message}. {PERMISSION_HINT}") from None
            if self.root != Path(POWERCAP_DIR):  # the user named a directory: that is what to check
                raise MeterError(f"rapl: {message} (expected a powercap directory holding intel-rapl:N zones)") from None
            raise MeterError(f"rapl: {message} (no RAPL here: not an Intel/AMD CPU, or not Linux)") from None
        self.name = "rapl (" + "+".join(z.name for z in self.counter.zones) + ")"

    def _read_energy_j(self, t_s: float) -> float:
        assert self.counter is not None
        try:
            return self.counter.read_j()
        except PermissionError:
            raise MeterError(f"rapl: permission to read the counters was withdrawn. {PERMISSION_HINT}") from None
        except (OSError, ValueError) as exc:
            raise MeterError(f"rapl: cannot read the counters ({exc})") from None
