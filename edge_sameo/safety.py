"""Opening model files without running code from them.

A PyTorch ``.pt`` file is a pickle, and a pickle can call any function while it loads.
The SAM checkpoints are read with ``torch.load(weights_only=True)``
(:mod:`edge_sameo.checkpoint`); a YOLO ``.pt`` detector pickles whole ultralytics
modules, which ``weights_only`` refuses, and ultralytics itself loads it with
``weights_only=False``. So :func:`check_detector_file` inspects a detector before
ultralytics opens it:

* ``.pt``: every pickle in the zip archive is scanned opcode by opcode (nothing is
  unpickled). Functions may only be *called* from a short allow-list (tensor and storage
  rebuilders, ``OrderedDict``, ``set``…); torch and ultralytics layer classes
  (``nn.Module`` subclasses) may only be *created empty* and filled with state (how
  ``torch.save`` stores a module), never called; any other global (``os.system``,
  ``builtins.eval``, ``subprocess.Popen``…) refuses the file.
* ``.onnx``, an OpenVINO folder, a TensorRT ``.engine``: no pickle; the metadata that
  ultralytics parses must be plain literals (old ultralytics releases ``eval`` it).
* anything else is refused: the formats above are the only ones ultralytics is handed.
"""

from __future__ import annotations

import ast
import importlib
import json
import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from edge_sameo.errors import CheckpointError

#: What a refused detector is told to use instead.
SAFE_DETECTOR_FORMATS = "ONNX (.onnx), an OpenVINO folder or a TensorRT .engine"

#: Functions (and harmless constructors) a YOLO checkpoint's pickle may call.
CALLABLE_GLOBALS = frozenset(
    {
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch.Size",
        "torch.device",
        "collections.OrderedDict",
        "builtins.set",
        "builtins.frozenset",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.slice",
        "builtins.complex",
        "builtins.bytearray",
        "_codecs.encode",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.dtype",
        "types.SimpleNamespace",
        "ultralytics.utils.IterableSimpleNamespace",
        "pathlib.Path",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "datetime.datetime",
        "datetime.date",
    }
)
#: Globals a pickle may name but not call: the ndarray type numpy rebuilds arrays with.
VALUE_GLOBALS = frozenset({"numpy.ndarray"})
#: Modules whose ``nn.Module`` subclasses may be created empty (NEWOBJ) and filled (BUILD).
MODULE_PACKAGES = ("torch.nn.modules.", "ultralytics.nn.")
#: Pickle opcodes torch.save never writes that create objects in other ways.
REFUSED_OPCODES = frozenset(
    {"INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "NEXT_BUFFER", "READONLY_BUFFER"}
)
_STRING_OPCODES = frozenset(
    {
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
    }
)
#: Python 2 module names pickle protocol 2 writes (unpickling maps them, so must we).
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
#: Metadata keys ultralytics converts from strings (``eval`` in releases before 8.4).
_LITERAL_KEYS = ("imgsz", "names", "kpt_shape", "kpt_names", "args", "end2end")


class _Global:
    """A global a pickle named; ``kind``: "call" (may be called), "class" (may be created
    empty) or "value" (may only be referenced)."""

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind


class _Str(str):
    """A string literal on the simulated stack (the operands of STACK_GLOBAL)."""


_MARK = object()
_OBJECT = object()


def _is_layer_class(module: str, attr: str) -> bool:
    """Whether ``module.attr`` is an ``nn.Module`` subclass defined in torch's or
    ultralytics' layer packages (imported only under those package names)."""
    if not f"{module}.".startswith(MODULE_PACKAGES):
        return False
    import torch

    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return False
    return (
        isinstance(obj, type)
        and issubclass(obj, torch.nn.Module)
        and obj.__module__.startswith(MODULE_PACKAGES)
    )


def _is_torch_value(module: str, attr: str) -> bool:
    """``torch.FloatStorage`` and friends, and dtypes such as ``torch.float16``."""
    if module not in ("torch", "torch.storage"):
        return False
    import torch

    obj = getattr(torch, attr, None) if module == "torch" else None
    return attr.endswith("Storage") or isinstance(obj, torch.dtype)


def _classify(module: str, attr: str, source: str) -> _Global:
    module = _PY2_MODULES.get(module, module)
    name = f"{module}.{attr}"
    if name in CALLABLE_GLOBALS:
        return _Global(name, "call")
    if _is_layer_class(module, attr):
        return _Global(name, "class")
    if name in VALUE_GLOBALS or _is_torch_value(module, attr):
        return _Global(name, "value")
    raise _refused(source, f"its pickle names {name}, which is not on the allow-list")


def _refused(source: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: refused to load the detector: {why} (a .pt file can run code when "
        f"loaded; use a safe format: {SAFE_DETECTOR_FORMATS})"
    )


def _require(value: Any, kinds: tuple[str, ...], op: str, source: str) -> None:
    if not (isinstance(value, _Global) and value.kind in kinds):
        what = value.name if isinstance(value, _Global) else "a computed object"
        raise _refused(source, f"its pickle applies {op} to {what}")


def check_pickle(data: bytes, source: str) -> None:
    """Scan one pickle without unpickling it; raise ``CheckpointError`` unless every
    global is on the allow-list and is used as allowed (see the module docstring).

    The opcodes are walked with a symbolic stack (``pickletools``' stack effects) so that
    the target of each REDUCE/NEWOBJ/BUILD is known."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in REFUSED_OPCODES:
                raise _refused(source, f"its pickle uses the {name} opcode")
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                stack.append(_classify(module, attr, source))
                continue
            if name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                if not (isinstance(module, _Str) and isinstance(attr, _Str)):
                    raise _refused(source, "its pickle builds a global name at load time")
                stack.append(_classify(module, attr, source))
                continue
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if name == "MEMOIZE" else cast(int, arg)] = stack[-1]
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[cast(int, arg)])
                continue
            if name == "REDUCE":
                _require(stack[-2], ("call",), name, source)
            elif name == "NEWOBJ":
                _require(stack[-2], ("call", "class"), name, source)
            elif name == "NEWOBJ_EX":
                _require(stack[-3], ("call", "class"), name, source)
            elif name == "BUILD" and isinstance(stack[-2], _Global):
                raise _refused(source, f"its pickle sets the state of {stack[-2].name}")
            _apply_stack_effect(op, arg, stack)
    except CheckpointError:
        raise
    except (ValueError, IndexError, KeyError) as exc:  # genops on bad bytes, stack underflow
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint ({exc})") from None


def _apply_stack_effect(op: pickletools.OpcodeInfo, arg: Any, stack: list[Any]) -> None:
    """Pop and push what ``op`` pops and pushes (as ``pickletools.dis`` does)."""
    before, after = op.stack_before, op.stack_after
    if pickletools.markobject in before:
        while stack[-1] is not _MARK:
            stack.pop()
        stack.pop()
        count = before.index(pickletools.markobject)
    else:
        count = len(before)
    if count > len(stack):
        raise IndexError("pickle stack underflow")
    del stack[len(stack) - count :]
    if op.name in _STRING_OPCODES:
        stack.append(_Str(arg if isinstance(arg, str) else bytes(arg).decode("latin-1")))
    else:
        stack.extend(_MARK if x is pickletools.markobject else _OBJECT for x in after)


def check_torch_archive(path: Path) -> None:
    """A ``torch.save`` zip whose every pickle passes :func:`check_pickle`."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                # zipfile reads the last of equal names, torch's reader may take another:
                # the scanned pickle would not be the one that loads.
                raise _refused(str(path), "it holds two zip entries of the same name")
            if any("/code/" in f"/{n}" or n.endswith("constants.pkl") for n in names):
                raise _refused(str(path), "it is a TorchScript archive, not a YOLO checkpoint")
            pickles = [info for info in infos if info.filename.endswith(".pkl")]
            if not pickles:
                raise CheckpointError(f"{path}: not a PyTorch checkpoint (no data.pkl inside)")
            for info in pickles:
                with archive.open(info) as member:
                    check_pickle(member.read(), str(path))
    except zipfile.BadZipFile:
        raise _refused(
            str(path), "it is not a zip checkpoint (torch.save writes zip files since torch 1.6)"
        ) from None


def _check_literals(metadata: Mapping[str, Any], source: str) -> None:
    for key in _LITERAL_KEYS:
        value = metadata.get(key)
        if isinstance(value, str):
            try:
                ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise CheckpointError(
                    f"{source}: refused to load the detector: metadata {key!r} is not a plain "
                    "literal (ultralytics would evaluate it as code)"
                ) from None


def _onnx_metadata(path: Path) -> dict[str, Any]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    return {p.key: p.value for p in model.metadata_props}


def _engine_metadata(path: Path) -> dict[str, Any]:
    """The JSON header ultralytics writes before an engine (none: a plain engine)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(4), "little")
        try:
            meta = json.loads(f.read(size).decode("utf-8")) if 0 < size < 1 << 20 else {}
        except (UnicodeDecodeError, ValueError):
            return {}
    return meta if isinstance(meta, dict) else {}


def _openvino_metadata(folder: Path) -> dict[str, Any]:
    import yaml

    if not any(folder.glob("*.xml")):
        raise CheckpointError(
            f"{folder} is a directory without an OpenVINO model (*.xml); "
            f"detectors are .pt, {SAFE_DETECTOR_FORMATS}"
        )
    sidecar = folder / "metadata.yaml"
    if not sidecar.is_file():
        return {}
    try:
        meta = yaml.safe_load(sidecar.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{sidecar}: not readable YAML ({type(exc).__name__})") from None
    return meta if isinstance(meta, dict) else {}


def check_detector_file(path: Path) -> None:
    """Refuse (``CheckpointError``, one line) a detector file that could run code when
    ultralytics loads it, or that is not one of the formats handed to ultralytics."""
    suffix = path.suffix.lower()
    if path.is_dir():
        metadata = _openvino_metadata(path)
    elif suffix == ".pt":
        check_torch_archive(path)
        return
    elif suffix == ".onnx":
        metadata = _onnx_metadata(path)
    elif suffix == ".engine":
        metadata = _engine_metadata(path)
    else:
        raise CheckpointError(
            f"{path}: unsupported detector format {suffix or '(no extension)'!r}; "
            f"use a YOLO .pt, {SAFE_DETECTOR_FORMATS}, or a replay .jsonl/.json"
        )
    _check_literals(metadata, str(path))
