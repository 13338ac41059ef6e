"""The CPU package energy counter (Intel/AMD RAPL through Linux powercap).

``/sys/class/powercap/intel-rapl:N/energy_uj`` is a microjoule counter per CPU
package that wraps to zero at ``max_energy_range_uj``. The sampler reads it
every period; :class:`RaplCounter` turns the raw values into one cumulative,
wrap-free energy in joules. A reader that cannot open the counters raises
:class:`RaplUnavailable` with the reason (often: root-only since Linux 5.10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

POWERCAP_DIR = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


class RaplUnavailable(Exception):
    """RAPL cannot be read on this host; ``str(exc)`` says why."""


@dataclass
class _Zone:
    path: Path
    name: str
    max_range_uj: int
    last_uj: int | None = None
    total_uj: int = 0

    def update(self) -> int:
        raw = int((self.path / "energy_uj").read_text().strip())
        if self.last_uj is not None:
            delta = raw - self.last_uj
            if delta < 0:  # wrapped once since the last read (wraps take minutes; we read every 170 ms)
                delta += self.max_range_uj
            self.total_uj += delta
        self.last_uj = raw
        return self.total_uj


class RaplCounter:
    """Cumulative CPU package energy since construction, J, summed over packages.

    Only top-level zones (``intel-rapl:0``, ``intel-rapl:1``) are summed: their
    sub-zones (``core``, ``dram``) are parts of them and would count twice.
    """

    def __init__(self, root: str | Path = POWERCAP_DIR) -> None:
        root = Path(root)
        if not root.is_dir():
            raise RaplUnavailable(f"no powercap interface at {root}")
        zones = []
        for path in sorted(p for p in root.iterdir() if _PACKAGE_ZONE.match(p.name)):
            try:
                name = (path / "name").read_text().strip()
                max_range = int((path / "max_energy_range_uj").read_text().strip())
            except (OSError, ValueError) as exc:
                raise RaplUnavailable(f"unreadable RAPL zone {path}: {exc}") from None
            zones.append(_Zone(path, name, max_range))
        if not zones:
            raise RaplUnavailable(f"no intel-rapl:N zone under {root}")
        packages = [z for z in zones if z.name.startswith("package")]
        self.zones = packages or zones
        try:
            self.read_j()
        except PermissionError:
            raise RaplUnavailable(
                f"{self.zones[0].path / 'energy_uj'} is readable by root only (Linux >= 5.10); "
                "grant access with `sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj`"
            ) from None
        except (OSError, ValueError) as exc:
            raise RaplUnavailable(f"cannot read RAPL counters: {exc}") from None

    def read_j(self) -> float:
        """Energy of all packages since construction, J (wrap-around removed).

        Must be called more often than the counter wraps (minutes at full load).
        """
        return sum(zone.update() for zone in self.zones) / 1e6
