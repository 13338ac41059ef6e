"""A host fingerprint: is this the machine an energy model was calibrated on?

Resource features (CPU use, GPU clocks, energy counters) only mean the same
thing on the same hardware. Energy model files record the fingerprint of the
rig they were measured on; :func:`pytest_irene.pipeline.choose_features` uses
resource features only when the current host matches it
(:func:`fingerprint_matches`) and otherwise falls back to model features,
saying why (:func:`fingerprint_differences`).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from pytest_irene.rig.runtime.nvml import NvmlUnavailable, load_nvml

#: Memory may differ by this fraction and still match (firmware/kernel reservations vary).
MEMORY_TOLERANCE = 0.05


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Processor", "cpu model") and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_gib(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 2)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 2)
    except (ValueError, OSError, AttributeError):
        return None


def host_fingerprint(*, nvml_module: Any = None) -> dict[str, Any]:
    """This host's fingerprint, JSON-able.

    Keys: ``cpu_model`` (str), ``cpu_count`` (logical CPUs), ``memory_gib``
    (float), ``gpus`` (list of GPU names, NVML order; empty without NVML),
    ``driver_version`` (NVIDIA driver or ``None``), ``gpu_reason`` (why
    ``gpus`` is empty, only then). ``nvml_module`` replaces ``pynvml`` in tests.
    """
    fp: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "memory_gib": _memory_gib(),
        "gpus": [],
        "driver_version": None,
    }
    try:
        nvml = load_nvml(nvml_module)
    except NvmlUnavailable as exc:
        fp["gpu_reason"] = str(exc)
        return fp
    with nvml:
        fp["gpus"] = [g.name for g in nvml.gpus]
        fp["driver_version"] = nvml.driver_version
    return fp


def _norm(text: Any) -> str:
    return " ".join(str(text).split()).lower()


def fingerprint_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints in ways that change resource features.

    Compared: CPU model, logical CPU count, GPU names (as a multiset, in order),
    and memory within :data:`MEMORY_TOLERANCE` when both record it. The driver
    version is informational only. Empty list: the hosts match.
    """
    diffs = []
    if _norm(a.get("cpu_model", "")) != _norm(b.get("cpu_model", "")) or not a.get("cpu_model"):
        diffs.append(f"CPU model {a.get('cpu_model')!r} != {b.get('cpu_model')!r}")
    if a.get("cpu_count") != b.get("cpu_count"):
        diffs.append(f"CPU count {a.get('cpu_count')} != {b.get('cpu_count')}")
    gpus_a = [_norm(g) for g in a.get("gpus") or []]
    gpus_b = [_norm(g) for g in b.get("gpus") or []]
    if gpus_a != gpus_b:
        diffs.append(f"GPUs {list(a.get('gpus') or [])} != {list(b.get('gpus') or [])}")
    mem_a, mem_b = a.get("memory_gib"), b.get("memory_gib")
    if mem_a is not None and mem_b is not None:
        if abs(float(mem_a) - float(mem_b)) > MEMORY_TOLERANCE * max(float(mem_a), float(mem_b)):
            diffs.append(f"memory {mem_a} GiB != {mem_b} GiB")
    return diffs


def fingerprint_matches(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when resource features measured on host ``b`` are valid on host ``a`` (and back)."""
    return not fingerprint_differences(a, b)


def describe(fp: dict[str, Any]) -> str:
    """One line for report headers: ``AMD EPYC x2, 23.5 GiB, 1x NVIDIA H100 (driver 550.54)``."""
    parts = [f"{fp.get('cpu_model', '?')} x{fp.get('cpu_count', '?')}"]
    if fp.get("memory_gib") is not None:
        parts.append(f"{float(fp['memory_gib']):.1f} GiB")
    gpus = list(fp.get("gpus") or [])
    if gpus:
        counts: dict[str, int] = {}
        for name in gpus:
            counts[name] = counts.get(name, 0) + 1
        text = " + ".join(f"{n}x {name}" for name, n in counts.items())
        if fp.get("driver_version"):
            text += f" (driver {fp['driver_version']})"
        parts.append(text)
    else:
        parts.append("no GPU")
    return ", ".join(parts)
