"""The board's /main.py (tools/flash.py installs this file under that name): it runs the active
application directory, app_a or app_b, and is never replaced by an update, so a broken update
cannot take it away. It imports nothing from the app directories; ota.json's format is
shared with ota.py.

A new directory is on trial: each boot is counted in ota.json; the app clears the trial once it
has run healthy (ota.confirm). After MAX_TRIAL_BOOTS boots without that, the previous
directory runs again. An exception out of the app resets the board (a trial boot spent).
Running out of memory outside a trial resets it too, but not for ever: after MAX_OOM_BOOTS in a
row (counted in ota.json, cleared by ota.confirm) the same heap would only run out again, so
the board stays at the REPL with the reason on the console and the charger on its own.
"""

import gc
import json
import os
import sys

STATE = "ota.json"
DIRS = ("app_a", "app_b")
MAX_TRIAL_BOOTS = 3
MAX_OOM_BOOTS = 3


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
    try:
        import main  # noqa: F401  the application (its main.py runs at import)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: BLE001  anything: the board must not stay stuck
        sys.print_exception(err) if hasattr(sys, "print_exception") else print(repr(err))
        if isinstance(err, MemoryError) and not state.get("trial"):
            err = None
            gc.collect()
            state["oom"] = state.get("oom", 0) + 1
            try:
                save(state)
            except MemoryError:  # not even for that: stay now
                state["oom"] = MAX_OOM_BOOTS
            if state["oom"] >= MAX_OOM_BOOTS:
                print("bootstrap: out of memory at %d boots in a row: not restarted again"
                      " (the board's heap is too small for the adapter)" % state["oom"])
                return
        fail()


run()
