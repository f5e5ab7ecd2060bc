"""What the ONNX-based runtimes share: locating the graph files of a precision, opening
them only when they are the graphs ``contract.json`` describes, and the ONNX Runtime
session options every user of ONNX Runtime (backend, calibration, export checks) runs with."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from edge_sameo.backends.engine_cache import file_sha256
from edge_sameo.contract import CONTRACT_FILE, ExportContract, GraphContract, precision_onnx_path
from edge_sameo.errors import InputError
from edge_sameo.precision import CALIBRATED_PRECISIONS

T = TypeVar("T")
#: ONNX Runtime's CPU execution provider, alone.
CPU_PROVIDERS = ("CPUExecutionProvider",)
#: A graph's inputs or outputs as (tensor names, shape); a dimension that is not an int
#: is dynamic.
TensorIO = tuple[Iterable[str], Sequence[Any]]


def precision_file(directory: Path, graph_file: str, precision: str) -> Path:
    """``encoder.onnx`` for fp32, ``encoder.<precision>.onnx`` (written by ``calib``)
    otherwise; a clear error when the graph of that precision was not produced."""
    path = precision_onnx_path(directory, graph_file, "fp32" if precision == "bf16" else precision)
    if not path.is_file():
        hint = (
            f"; run: edge-sameo calibrate --onnx {directory} --precision {precision}"
            if precision in CALIBRATED_PRECISIONS
            else "; run: edge-sameo export"
        )
        raise InputError(f"missing {path}{hint}")
    return path


def ort_session(
    path: str | Path, threads: int | None = None, providers: Sequence[str] = CPU_PROVIDERS
) -> Any:
    """An ``onnxruntime.InferenceSession`` of the graph at ``path`` on ``providers`` (all
    of them installed), every graph optimisation on, warnings off. ``threads``: intra-op
    threads (None or 0: ONNX Runtime's default, one per core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Its warnings (unused initializers, nodes placed on the CPU) are noise to our users.
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        # ONNX Runtime's sequential execution runs one node at a time: no inter-op pool.
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=list(providers))


def read_contract(directory: str | Path) -> tuple[Path, ExportContract]:
    d = Path(directory)
    return d, ExportContract.read(d)


def open_graph(
    directory: Path,
    contract: ExportContract,
    graph_file: str,
    precision: str,
    opener: Callable[[Path], T],
) -> T:
    """``opener(path)`` of a graph's file, after checking the file against the sha256 that
    ``contract.json`` lists for it; a file the runtime cannot parse is an ``InputError``."""
    path = precision_file(directory, graph_file, precision)
    expected = contract.sha256.get(path.name)
    if expected and file_sha256(path) != expected:
        raise InputError(
            f"{path}: differs from the sha256 in {CONTRACT_FILE} (changed or replaced after "
            "the export); export again"
        )
    try:
        if not expected:
            _parse_onnx(path)  # no checksum: parse it here (OpenVINO logs its own failures)
        return opener(path)
    except InputError:
        raise
    except Exception as exc:  # each runtime raises its own types for a bad file
        lines = str(exc).strip().splitlines()
        detail = lines[-1].strip() if lines else type(exc).__name__
        raise InputError(f"{path}: not a loadable ONNX graph ({detail[:160]})") from None


def _parse_onnx(path: Path) -> None:
    """Raise unless ``path`` parses as an ONNX model with a graph (weights not loaded)."""
    import onnx

    if not onnx.load(str(path), load_external_data=False).graph.node:
        raise ValueError("the file holds no graph")


def _dims(shape: Sequence[Any]) -> tuple[int | str, ...]:
    return tuple(d if isinstance(d, int) and not isinstance(d, bool) else "?" for d in shape)


def check_graph_io(
    path: str | Path,
    graph: GraphContract,
    inputs: Sequence[TensorIO],
    outputs: Sequence[TensorIO],
) -> None:
    """The tensors a runtime reports for a graph file must be the contract's: same names,
    same static dimensions, dynamic where the contract is dynamic."""
    for kind, specs, got in (("input", graph.inputs, inputs), ("output", graph.outputs, outputs)):
        if len(specs) != len(got):
            raise InputError(
                f"{path}: the graph has {len(got)} {kind}s, {CONTRACT_FILE} lists {len(specs)} "
                f"({', '.join(t.name for t in specs)})"
            )
        for spec in specs:
            match = next((shape for names, shape in got if spec.name in set(names)), None)
            if match is None:
                raise InputError(f"{path}: the graph has no {kind} {spec.name!r} ({CONTRACT_FILE})")
            if _dims(match) != _dims(spec.shape):
                raise InputError(
                    f"{path}: {kind} {spec.name!r} has shape {list(_dims(match))} in the graph, "
                    f"{list(_dims(spec.shape))} in {CONTRACT_FILE}"
                )
