"""Modules the board needs only now and then (the settings schema, the update code, Home
Assistant discovery): imported when used and dropped from sys.modules again, so that their code
and tables leave the heap once the caller lets go. Only for modules no other module imports at
its top."""

import sys


def load(name):
    module = __import__(name)
    sys.modules.pop(name, None)
    return module
