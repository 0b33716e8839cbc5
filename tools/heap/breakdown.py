"""What the heap holds before the tasks run: each module's import on its own, measured on the
Unix port, so that the big ones show, and which of them this configuration loads at all."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tools.build import FIRMWARE
from tools.heap import wasm32
from tools.heap.firmware import micropython_path

BUILTIN_MODULES = ("gc", "sys", "os", "time", "json", "select", "socket", "struct", "binascii",
                   "hashlib", "errno", "asyncio")
NOT_IMPORTED = {"main", "bootstrap"}  # entry points: they run the firmware when imported
NOT_IMPORTED |= {"board_esp32"}  # needs the ESP32's `network`
IMPORT_RE = re.compile(r"^\s*(?:import\s+(\w+)|from\s+(\w+)\s+import\s+(\w+))", re.M)


def import_order(fw: Path) -> list[str]:
    """The firmware's modules (and microdot, umqtt.simple) dependencies first, so that each
    import's heap delta is that module's own cost."""
    names = {p.stem for p in FIRMWARE.glob("*.py")} - NOT_IMPORTED
    deps: dict[str, set[str]] = {}
    for name in names:
        found = set()
        for m in IMPORT_RE.finditer((FIRMWARE / (name + ".py")).read_text()):
            mod = m.group(1) or m.group(2)
            if mod == "umqtt":
                found.add("umqtt.simple")
            elif mod in names or mod == "microdot":
                found.add(mod)
        deps[name] = found - {name}
    deps["microdot"] = set()
    deps["umqtt.simple"] = set()
    order: list[str] = []

    def visit(n: str, path: tuple[str, ...] = ()) -> None:
        if n in order or n in path:
            return
        for d in sorted(deps.get(n, ())):
            visit(d, path + (n,))
        order.append(n)

    for n in sorted(deps):
        visit(n)
    return order


BREAKDOWN_SCRIPT = """
import gc, sys
sys.path.insert(0, %(fw)r)
gc.collect()
print("base", gc.mem_alloc())
def step(name, fn):
    gc.collect()
    a = gc.mem_alloc()
    try:
        r = fn()
        err = ""
    except Exception as e:
        r = None
        err = "%%s: %%s" %% (type(e).__name__, e)
    gc.collect()
    print("step", name, gc.mem_alloc() - a, err)
    return r
if %(per_module)r:  # each module on its own, dependencies first
    for name in %(builtins)r + %(order)r:
        step("import " + name, lambda: __import__(name))
import board, cold, app
def load_config(path):  # as main.load_config: config.py read in and let go
    values, errors, source = cold.load("config").load(path)
    return app.Config(values, errors, source)
cfg = step("config.load", lambda: load_config(%(config)r))
hw = step("board.make", lambda: board.make(cfg, %(uart)r))
a = step("App(...)", lambda: app.App(cfg, hw, %(state)r, "127.0.0.1", 8080, %(config)r))
step("import web", lambda: __import__("web"))  # what web_task loads first
gc.collect()
print("total", gc.mem_alloc())
print("modules", " ".join(sorted(sys.modules)))
"""


def _run(text: str, name: str, fw: Path, lib: Path, workdir: Path, micropython: str | None,
         bits32: bool, files: dict[str, str] | None = None) -> str:
    """A script on the Unix port (4 MB of heap) or on the 32-bit webassembly port (with
    `files` written into its filesystem) with the firmware importable: its output."""
    if bits32:
        return wasm32.run(fw, lib, text, files or {}, workdir / name)
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / (name + ".py")
    script.write_text(text)
    env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (fw, lib))
    out = subprocess.run([micropython or micropython_path(), "-X", "heapsize=4M", str(script)],
                         capture_output=True, text=True, env=env, cwd=workdir, timeout=60)
    return out.stdout + out.stderr


def _breakdown_pass(fw: Path, lib: Path, workdir: Path, micropython: str | None,
                    per_module: bool, bits32: bool = False) -> dict[str, Any]:
    name = "breakdown_%s%s" % ("modules" if per_module else "firmware", "_32" if bits32 else "")
    where = Path("/work") if bits32 else workdir  # the webassembly port's own filesystem
    text = BREAKDOWN_SCRIPT % {
        "fw": "/fw" if bits32 else str(fw), "builtins": list(BUILTIN_MODULES),
        "order": import_order(fw), "config": str(where / "config.json"),
        "uart": "socket://127.0.0.1:9", "state": str(where / "state.json"),
        "per_module": per_module,
    }
    files = {str(where / "config.json"): (workdir / "config.json").read_text()}
    stdout = _run(text, name, fw, lib, workdir, micropython, bits32, files)
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"steps": steps, "modules": [], "output": stdout[-4000:]}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("base", "total"):
            result[word] = int(rest)
        elif word == "modules":
            result["modules"] = rest.split()
        elif word == "step":
            m = re.match(r"(.+?) (-?\d+) ?(.*)$", rest)  # "import x 1234 [error]"
            if m:
                steps.append({"what": m.group(1), "bytes": int(m.group(2)),
                              "error": m.group(3) or None})
    return result


def breakdown(fw: Path, lib: Path, config: dict[str, Any], micropython: str | None = None,
              workdir: Path | None = None, bits32: bool = False) -> dict[str, Any]:
    """What the heap holds before the tasks run, on the Unix port with a large heap: each
    module's import on its own (dependencies first), then config.load, board.make, App(...)
    and `import web`. A second process does what the firmware does (import app, App(...),
    import web): its total is the figure, its sys.modules says which modules this
    configuration loads (the others are listed, not counted). `bits32`: the same on the
    32-bit webassembly port (wasm32.py)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="bench_heap_bd_"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config))
    real = _breakdown_pass(fw, lib, workdir, micropython, False, bits32)
    each = _breakdown_pass(fw, lib, workdir, micropython, True, bits32)
    loaded = set(real["modules"])
    steps = []
    for st in each["steps"]:
        name = st["what"][len("import "):] if st["what"].startswith("import ") else None
        st["loaded"] = name is None or name in loaded or name in BUILTIN_MODULES
        steps.append(st)
    return {
        "base": real.get("base"),
        "total": real.get("total"),
        "steps": steps,
        "not_loaded": [s["what"][7:] for s in steps if not s["loaded"]],
        "error": None if real.get("total") else real["output"],
    }


def breakdown_table(b: dict[str, Any], b32: dict[str, Any] | None = None) -> str:
    """The Unix port's figures; with `b32`, the 32-bit port's beside them."""
    if not b.get("total"):
        return "heap breakdown failed: %s" % b.get("error")
    if b32 is not None and not b32.get("total"):
        return "heap breakdown on the 32-bit port failed: %s" % b32.get("error")
    other = {st["what"]: st for st in (b32 or {}).get("steps", [])}

    def row(what: str, n: int | None, n32: int | None = None, note: str = "") -> str:
        line = "  %-30s %7s B" % (what, n if n is not None else "-")
        if b32 is not None:
            line += "  %7s B" % (n32 if n32 is not None else "-")
        return line + note

    head = "what the heap holds before the tasks start (after gc.collect()):"
    lines = [head, "  %-30s %9s" % ("", "Unix port") + ("  %9s" % "32-bit" if b32 else "")]
    lines.append(row("the interpreter at start", b.get("base", 0), (b32 or {}).get("base")))
    for st in b["steps"]:
        if st["loaded"] and (st["bytes"] or st["error"]):
            n32 = other.get(st["what"], {}).get("bytes")
            note = "  (" + st["error"] + ")" if st["error"] else ""
            lines.append(row(st["what"], st["bytes"], n32, note))
    lines.append(row("total before the tasks run", b["total"], (b32 or {}).get("total")))
    if b["not_loaded"]:
        lines.append(
            "  not imported before the tasks run (later, or not with this config): "
            + ", ".join("%s %d B" % (s["what"][7:], s["bytes"]) for s in b["steps"]
                        if not s["loaded"])
        )
    return "\n".join(lines)


# The modules alone, as the firmware reads them in: the core's (the board layer aside: the
# webassembly port has none), then web (microdot), then MQTT's. No App, no task: the floor
# under any heap the core or the full set could run in.
MODULES_SCRIPT = """
import gc, sys
gc.collect(); base = gc.mem_alloc()
import app, web
gc.collect(); core = gc.mem_alloc()
import mqtt
gc.collect(); full = gc.mem_alloc()
print("modules", base, core, full)
"""


def modules_alone(fw: Path, lib: Path, workdir: Path, bits32: bool = False,
                  micropython: str | None = None) -> dict[str, int] | None:
    """The heap in use (bytes, with the interpreter's own) once the core's modules are read in
    ("core": app with what it imports, and web with microdot) and MQTT's too ("full"); None if
    the script failed."""
    name = "modules_32" if bits32 else "modules"
    stdout = _run(MODULES_SCRIPT, name, fw, lib, workdir, micropython, bits32)
    m = re.search(r"^modules (\d+) (\d+) (\d+)$", stdout, re.M)
    if not m:
        return None
    base, core, full = (int(g) for g in m.groups())
    return {"interpreter": base, "core": core, "full": full}


def modules_table(m64: dict[str, int] | None, m32: dict[str, int] | None) -> str:
    def cell(m: dict[str, int] | None, key: str) -> str:
        return "%7.1f kB" % (m[key] / 1024) if m else "%10s" % "-"

    lines = ["the modules alone, read in (heap in use, interpreter included; no App, no task):",
             "  %-30s %10s  %10s" % ("", "Unix port", "32-bit")]
    for key, what in (("core", "the core (+ microdot)"), ("full", "the full set (+ MQTT)")):
        lines.append("  %-30s %s  %s" % (what, cell(m64, key), cell(m32, key)))
    return "\n".join(lines)

