"""The machine a benchmark ran on, recorded beside its numbers (shared by the benchmarks)."""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        return cpu


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Platform, Python, CPU, torch and its threads, the device, the date and the load."""
    cpu = cpu_name()
    dev = torch.device(device) if device is not None else None
    cuda = (
        torch.cuda.get_device_name(dev if dev and dev.type == "cuda" else 0)
        if (torch.cuda.is_available())
        else None
    )
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(dev) if dev is not None else None,
        "device_name": cuda if dev is not None and dev.type == "cuda" else cpu,
        "cuda_device": cuda,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def describe(m: dict[str, Any]) -> str:
    """One sentence for a results table: platform, CPU, torch threads and the load."""
    load = (m.get("loadavg_1_5_15") or [float("nan")])[0]
    return (
        f"Machine: {m['platform']}, {m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']} with "
        f"{m['torch_threads']} thread(s), Python {m['python']}, {m['date']}; 1-min load "
        f"{load:.2f} at the start"
    )
