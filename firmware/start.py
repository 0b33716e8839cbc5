"""Builds the firmware from its arguments: the config in force, the board, the app. main.py
reads this in for that, lets it go and runs the app. On the board there are no arguments:
/config.json, the UART from the config, port 80.

A heap too small even for the core is found here, before the core's modules are read in: the
firmware says so once and does not start, rather than run out of memory at every boot.
"""

import sys

import board
import cold

USAGE = (
    "usage: main.py [--config FILE] [--uart HOST:PORT|TTY] [--http-host H] [--http-port P]"
    " [--state FILE] [--admin-password PW]"
)
OPTIONS = ("--config", "--uart", "--http-host", "--http-port", "--state", "--admin-password")
# the GC heap (as gc counts it) the core (charger link, controller, Venus, page and API) needs.
# 64-bit Unix port: 240K (gc: 237 kB), where host_tests/test_heap_core.py runs it for five
# minutes (ten in the closing notes) without a MemoryError; it survives 60 s at 224K and not at
# 216K (tools/bench_heap.py --find-min --core, docs/development.md "Memory"), too close to run
# for good. 32 bits: estimated from the modules' share (they take 0.89 of the 64-bit heap on the
# 32-bit port), not measured running on a board. The full set (MQTT too): app.FULL_SET_HEAP_*.
CORE_HEAP_64 = 236 * 1024
CORE_HEAP_32 = 208 * 1024


def parse_args(argv):
    opts = {}
    i = 0
    while i < len(argv):
        key = argv[i]
        if key not in OPTIONS or i + 1 >= len(argv):
            raise ValueError(USAGE)
        opts[key[2:]] = argv[i + 1]
        i += 2
    if "http-port" in opts:
        opts["http-port"] = int(opts["http-port"])
    return opts


def _env(name):
    """The Unix port acting as a board (tools/fakeboard.py) says where the charger is here."""
    try:
        from os import getenv
    except ImportError:  # the ESP32 has no environment
        return None
    return getenv(name)


def too_small():
    """Why the core cannot start here (None: it can): the heap the board can have is below
    what the core's modules and tasks need."""
    short = board.short_of(board.heap_can_have(), CORE_HEAP_64, CORE_HEAP_32)
    if short:
        return (
            "not started: %d kB of heap, the adapter's core needs %d kB (a board with PSRAM:"
            " the ESP32-S3-MINI-1-N4R2); the charger runs on its own settings" % short
        )
    return None


def load_config(path, admin_password=None):
    """The config in force. config.py and its schema are read in for this and let go again."""
    import app

    configuration = cold.load("config")
    values, errors, source = configuration.load(path)
    if admin_password and not values["admin"]["password_hash"]:
        auth = cold.load("auth")  # first start: set the admin password, stored hashed
        values["admin"]["password_hash"] = auth.make_hash(admin_password)
        if not errors:
            configuration.save(path, values)
    return app.Config(values, errors, source)


def make_app(argv):
    """The App to run; exits with status 2 on bad arguments. None: the heap is too small even
    for the core (said on the console; on the board the REPL stays, no reset loop)."""
    try:
        opts = parse_args(argv)
    except ValueError as err:
        print(err)
        sys.exit(2)
    problem = too_small()
    if problem:
        print(problem)
        return None
    import app
    path = opts.get("config", "config.json")
    cfg = load_config(path, opts.get("admin-password"))
    state_path = opts.get("state") or (
        path.rsplit("/", 1)[0] + "/state.json" if "/" in path else "state.json"
    )
    try:
        hw = board.make(cfg, opts.get("uart") or _env("IP22_UART"))
    except ValueError as err:
        print(err)
        sys.exit(2)
    a = app.App(
        cfg, hw, state_path, opts.get("http-host", "0.0.0.0"), opts.get("http-port"), path
    )
    fail = _env("IP22_FAIL_TASK")  # tests: "web:3" makes the web task fail three times
    if fail and ":" in fail:
        name, times = fail.split(":", 1)
        a.fail_task = [name, int(times)]
    healthy_s = _env("IP22_HEALTHY_S")  # the Unix port as a board: a rollback in seconds
    if healthy_s:
        a.healthy_s = int(healthy_s)
    return a

