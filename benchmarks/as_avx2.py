"""Run an ``edge-sameo`` command as an AVX2-only CPU would (no AVX-512, no bf16, no VNNI),
on a machine that has more: an estimate for that class where none is at hand.

    python benchmarks/as_avx2.py demo --out-dir out/avx2        # any edge-sameo arguments

What it caps, before torch or OpenVINO is imported: oneDNN's ISA (``ONEDNN_MAX_CPU_ISA=AVX2``,
which OpenVINO's CPU plugin and torch both read) and torch's kernels
(``ATEN_CPU_CAPABILITY=avx2``); every OpenVINO model, the detector's included, compiles with
an fp32 inference-precision hint (OpenVINO would pick bf16 from the CPU's flags, and has no
AVX2 kernels for it); and ``auto`` is told that bf16 does not pay and that the CPU has no
AVX-512, as on an AVX2 CPU (so the bundled detector is its INT8 export). What
it cannot change: the cores' clock, caches and memory. An AMD Zen 4 executes AVX-512 as two
256-bit halves, so its AVX2 code runs at about the speed of a Zen 3 core at the same clock;
a Zen 3 server part runs at about 2.45 GHz where this Zen 4 VM runs at 3 GHz or more, so
treat the figures as an upper bound for that class, and measure on the real CPU.
"""

from __future__ import annotations

import os
import sys
from typing import Any

CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def cap() -> None:
    """Apply the caps to this process (call before torch or OpenVINO is imported)."""
    os.environ.update(CAPS)
    import openvino as ov

    compile_model = ov.Core.compile_model

    def fp32_compile(self: Any, model: Any, device_name: Any = None, config: Any = None) -> Any:
        config = {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"}
        return compile_model(self, model, device_name, config)

    ov.Core.compile_model = fp32_compile  # type: ignore[method-assign]
    from edge_sameo.backends import openvino_backend

    openvino_backend.cpu_prefers_bf16 = lambda: False
    openvino_backend.cpu_has_avx512 = lambda: False


def main(argv: list[str]) -> int:
    """Cap this process, then run ``edge-sameo`` with ``argv``."""
    cap()
    from edge_sameo.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
