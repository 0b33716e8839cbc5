"""Run test_* functions of the given modules on the MicroPython Unix port.

    micropython host_tests/mp_runner.py test_vectors_vedirect test_vectors_ip22

The modules are the same files pytest runs on CPython; firmware/ is put on sys.path.
Prints one line per test and a last line "ran N failed M"; exits 1 if anything failed.
"""

import sys

HERE = sys.path[0]  # the script's directory
sys.path.insert(0, HERE.rsplit("/", 1)[0] + "/firmware" if "/" in HERE else "../firmware")


def run(names):
    ran = failed = 0
    for name in names:
        module = __import__(name)
        tests = sorted(k for k in dir(module) if k.startswith("test_"))
        for test in tests:
            fn = getattr(module, test)
            if not callable(fn):
                continue
            ran += 1
            try:
                fn()
            except Exception as err:  # report every failure, then go on
                failed += 1
                print("FAIL %s.%s: %s %r" % (name, test, type(err).__name__, err))
                sys.print_exception(err)
            else:
                print("ok   %s.%s" % (name, test))
    print("ran %d failed %d" % (ran, failed))
    return failed


if __name__ == "__main__":
    sys.exit(1 if run(sys.argv[1:]) else 0)
