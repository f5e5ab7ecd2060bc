"""The runtime (``edge_sameo/`` outside ``commands/``) loads what ``engines/``, ``calib/`` and
``train/`` make and never imports them; precisions are named in one module. Checked on the
source (every import statement, function-level and ``TYPE_CHECKING`` ones too) and in a fresh
interpreter."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_sameo.cli import main
from edge_sameo.precision import (
    CALIBRATED_PRECISIONS,
    ENGINE_PRECISIONS,
    PRECISIONS,
    RUNTIME_PRECISIONS,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge_sameo"
#: The build tools (symbolic links under edge_sameo/ to the top-level folders).
BUILD_TOOLS = ("engines", "calib", "train")
FORBIDDEN = (*(f"edge_sameo.{name}" for name in BUILD_TOOLS), *BUILD_TOOLS)


def is_forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f"{f}.") for f in FORBIDDEN)


def runtime_files() -> list[Path]:
    """Every ``.py`` file of the runtime: edge_sameo/ without commands/ and without the
    build tools, whose links are resolved and skipped."""
    skipped = {(PACKAGE / d).resolve() for d in ("commands", *BUILD_TOOLS)}
    files = []
    for folder, dirs, names in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if (Path(folder) / d).resolve() not in skipped]
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    return sorted(files)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in ``source``, wherever it stands: ``import a.b``,
    ``from a import b`` (as ``a`` and ``a.b``), relative imports resolved against
    ``module``, and ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a
    literal name."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parts, *([node.module] if node.module else [])])
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str):
                    yield node.lineno, arg.value


def test_the_walk_covers_the_runtime_and_skips_the_build_tools() -> None:
    names = {module_name(p) for p in runtime_files()}
    for expected in (
        "edge_sameo",
        "edge_sameo.predictor",
        "edge_sameo.backends.registry",
        "edge_sameo.backends.tensorrt_backend",
        "edge_sameo.stream",
    ):
        assert expected in names
    assert not any(n.startswith("edge_sameo.commands") or is_forbidden(n) for n in names)


def test_the_import_parser_sees_every_form() -> None:
    source = """
import edge_sameo.train.cli
from edge_sameo import calib
import importlib

def late() -> None:
    from edge_sameo.engines.tensorrt_build import build_engines
    importlib.import_module("edge_sameo.calib.qdq")
    import train

from ..engines import export
from .engine_cache import EngineCache
"""
    found = [m for _, m in imported(source, "edge_sameo.backends.registry", False)]
    assert sorted(m for m in found if is_forbidden(m)) == [
        "edge_sameo.calib",
        "edge_sameo.calib.qdq",
        "edge_sameo.engines",
        "edge_sameo.engines.export",
        "edge_sameo.engines.tensorrt_build",
        "edge_sameo.engines.tensorrt_build.build_engines",
        "edge_sameo.train.cli",
        "train",
    ]
    assert "edge_sameo.backends.engine_cache.EngineCache" in found
    # `from . import engines` in edge_sameo/__init__.py names the build tool; in a
    # subpackage it names a sibling module
    top = [m for _, m in imported("from . import engines", "edge_sameo", True)]
    sub = [m for _, m in imported("from . import engines", "edge_sameo.stream", True)]
    assert top == ["edge_sameo", "edge_sameo.engines"]
    assert sub == ["edge_sameo.stream", "edge_sameo.stream.engines"]


def test_the_runtime_imports_no_build_tool() -> None:
    offenders = []
    for path in runtime_files():
        module = module_name(path)
        for line, name in imported(path.read_text(), module, path.name == "__init__.py"):
            if is_forbidden(name):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert offenders == []


def test_importing_the_runtime_loads_no_build_tool() -> None:
    code = (
        "import sys, edge_sameo, edge_sameo.predictor, edge_sameo.stream, "
        "edge_sameo.backends.registry, edge_sameo.backends.tensorrt_backend\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = done.stdout.split()
    assert "edge_sameo.predictor" in loaded and "edge_sameo.stream" in loaded
    assert [m for m in loaded if is_forbidden(m)] == []


# --- one definition of the precisions ------------------------------------------------------


def test_every_runtime_runs_the_precisions_the_precision_module_lists() -> None:
    from edge_sameo.backends.registry import BACKENDS, backend_class

    assert set(RUNTIME_PRECISIONS) == set(BACKENDS)
    for name in BACKENDS:
        precisions = backend_class(name).precisions
        assert precisions == RUNTIME_PRECISIONS[name] and set(precisions) <= set(PRECISIONS)


@pytest.mark.parametrize(
    "argv, allowed, refused",
    [
        (["run", "--source", "synth", "--precision", "fp8"], PRECISIONS, "fp8"),
        (["build", "--onnx", "x", "--precision", "bf16"], ENGINE_PRECISIONS, "bf16"),
        (["calibrate", "--onnx", "x", "--precision", "fp32"], CALIBRATED_PRECISIONS, "fp32"),
        (
            ["train", "export", "--checkpoint", "c", "--out", "o", "--engine", "bf16"],
            ENGINE_PRECISIONS,
            "bf16",
        ),
    ],
)
def test_cli_precision_choices_come_from_the_precision_module(
    argv: list[str],
    allowed: tuple[str, ...],
    refused: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    choices = ", ".join(repr(p) for p in allowed)
    assert f"invalid choice: {refused!r} (choose from {choices})" in err
