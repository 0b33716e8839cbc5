"""The firmware on real MicroPython: shared vectors on the Unix port, mpy-cross for the board."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from conftest import FIRMWARE, ROOT, need_tool
from tools.build import stage_libs

VECTOR_MODULES = [
    "test_vectors_vedirect",
    "test_vectors_ip22",
    "test_vectors_ticks",
    "test_vectors_link",
    "test_vectors_config",
    "test_vectors_control",
    "test_vectors_trend",
]


def count_tests(module: str) -> int:
    tree = ast.parse((ROOT / "host_tests" / (module + ".py")).read_text())
    return sum(
        1
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    )


def test_vectors_pass_on_the_unix_port() -> None:
    micropython = need_tool("micropython")
    result = subprocess.run(
        [micropython, str(ROOT / "host_tests" / "mp_runner.py"), *VECTOR_MODULES],
        capture_output=True,
        text=True,
        timeout=300,
    )
    expected = sum(count_tests(m) for m in VECTOR_MODULES)
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout + result.stderr
    assert last == "ran %d failed 0" % expected, result.stdout + result.stderr


def test_every_firmware_module_compiles_with_mpy_cross(tmp_path: Path) -> None:
    mpy_cross = need_tool("mpy-cross")
    sources = sorted(FIRMWARE.glob("*.py"))
    assert sources
    for source in sources:
        out = tmp_path / (source.stem + ".mpy")
        result = subprocess.run(
            [mpy_cross, "-O2", "-o", str(out), str(source)], capture_output=True, text=True
        )
        assert result.returncode == 0, source.name + ": " + result.stderr
        assert out.stat().st_size > 0


def test_every_firmware_module_imports_on_the_unix_port(tmp_path: Path) -> None:
    micropython = need_tool("micropython")
    lib = stage_libs(tmp_path / "lib")
    entries = ("main", "bootstrap")  # scripts: they run when imported (test_ota runs them)
    board_only = ("board_esp32",)  # needs `network`: compiled and type-checked, run on the ESP32
    names = [
        p.stem for p in sorted(FIRMWARE.glob("*.py")) if p.stem not in entries + board_only
    ]
    code = "import sys; sys.path[:0] = [%r, %r]\n" % (str(FIRMWARE), str(lib))
    code += "".join("import %s\n" % n for n in names) + "print('imported', %d)" % len(names)
    result = subprocess.run([micropython, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported %d" % len(names)
