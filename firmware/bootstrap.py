"""The board's /main.py (tools/flash.py installs this file under that name): it runs the active
application directory, app_a or app_b, and is never replaced by an update, so a broken update
cannot take it away. It imports nothing from the app directories; ota.json's format is
shared with ota.py.

A new directory is on trial: each boot is counted in ota.json; the app clears the trial once it
has run healthy (ota.confirm). After MAX_TRIAL_BOOTS boots without that, the previous
directory runs again. An exception out of the app resets the board (a trial boot spent), and so
does an app that ends by itself on trial (it said why it could not start).

Running out of memory outside a trial resets the board too, but not for ever: once
MAX_OOM_BOOTS boots have run out of memory since the app last ran healthy (counted in ota.json;
ota.confirm and a new install by flash.py forget them) the same heap would only run out again,
so the board stays at the REPL with the reason on the console and the charger on its own. This
path is written for a full heap (a failed import keeps what it filled it with): 2 kB held back
from the app for it, the message made beforehand, and any failure in it means stay.
"""

import gc
import json
import os
import sys

STATE = "ota.json"
DIRS = ("app_a", "app_b")
MAX_TRIAL_BOOTS = 3
MAX_OOM_BOOTS = 3
RESERVE = 2048  # bytes kept from the app: what counting an out-of-memory boot needs
STAY = (
    "bootstrap: out of memory at every start: not restarted again (the board's heap is too"
    " small for the adapter; a power cycle tries once more)"
)


def load():
    try:
        with open(STATE) as f:
            state = json.loads(f.read())
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict) or state.get("active") not in DIRS:
        state = {"active": DIRS[0]}
    return state


def save(state):
    with open(STATE + ".tmp", "w") as f:
        f.write(json.dumps(state))
    os.rename(STATE + ".tmp", STATE)


def choose():
    """The state of this boot: the directory to run ("active"), and whether it is on trial."""
    state = load()
    if state.get("trial"):
        state["boots"] = state.get("boots", 0) + 1
        if state["boots"] > MAX_TRIAL_BOOTS and state.get("previous") in DIRS:
            print(
                "update %s did not start in %d boots: back to %s"
                % (state.get("version"), MAX_TRIAL_BOOTS, state["previous"])
            )
            state = {"active": state["previous"], "rolled_back": state.get("version") or "?"}
        save(state)
    return state


def fail():
    try:
        import machine

        machine.reset()
    except (ImportError, AttributeError):  # the Unix port acting as a board
        sys.exit(1)


def run():
    state = choose()
    active = state["active"]
    print("bootstrap: running %s" % active)
    sys.path.insert(0, active)
    reserve = bytearray(RESERVE)
    try:
        import main  # noqa: F401  the application (its main.py runs at import)
    except (KeyboardInterrupt, SystemExit):
        raise
    except MemoryError as err:
        reserve = None  # for what follows: the app's modules stay where they are
        sys.print_exception(err) if hasattr(sys, "print_exception") else print(repr(err))
        err = None
        if not out_of_memory_again():
            fail()
        return
    except BaseException as err:  # noqa: BLE001  anything: the board must not stay stuck
        sys.print_exception(err) if hasattr(sys, "print_exception") else print(repr(err))
        fail()
    if state.get("trial"):  # it ended by itself (not started): the trial must go on to its end
        fail()


def out_of_memory_again():
    """Count this boot's MemoryError; True: stay at the REPL (the count is up, or even this
    step found no memory), False: reset. On trial it is a broken update: reset."""
    try:
        gc.collect()
        state = load()  # afresh: the app may have switched or confirmed meanwhile
        if state.get("trial"):
            return False
        state["oom"] = state.get("oom", 0) + 1
        save(state)
        if state["oom"] < MAX_OOM_BOOTS:
            return False
    except BaseException:  # noqa: BLE001  no memory, or the flash: stay rather than loop
        pass
    print(STAY)
    return True


run()
