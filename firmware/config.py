"""config.json: defaults for everything, validation that names the field and the reason, atomic
save, secrets that never leave the board. A broken file never bricks the board: `load()` falls
back to defaults and says why, and the app then runs in safe mode (controller off, charger
untouched)."""

import json
import os

import cold

SECRET = "***"  # what interfaces show instead of a secret that is set


def schema():
    """The specs (schema.py), read in for this use only."""
    return cold.load("schema").SCHEMA


def defaults(specs=None):
    if specs is None:
        specs = schema()
    out = {}
    for key, spec in specs.items():
        out[key] = defaults(spec) if isinstance(spec, dict) else spec[1]
    return out


def _check(spec, value):
    """The reason `value` does not fit `spec`, or None."""
    kind = spec[0]
    if kind in ("str", "secret"):
        if not isinstance(value, str):
            return "must be text"
        if len(value) > spec[2]:
            return "must be at most %d characters" % spec[2]
        for c in value:  # it becomes a hostname, a topic, a header, a line in a UTF-8 file
            o = ord(c)
            if o < 0x20 or o == 0x7F or 0xD800 <= o <= 0xDFFF:
                return "must not hold control characters (CR, LF, NUL, tab) or invalid text"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "choice":  # 4.0 == 4 and True == 1, but the code needs the very value
        if any(value == c and type(value) is type(c) for c in spec[2]):
            return None
        return "must be one of %s" % ", ".join(str(c) for c in spec[2])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    if kind == "int" and not isinstance(value, int):
        return "must be a whole number"
    if value != value or not spec[2] <= value <= spec[3]:
        return "must be %s..%s" % (spec[2], spec[3])
    return None


def validate(data, specs=None, prefix=""):
    """(clean config, [errors]): every valid field of `data` over the defaults; an invalid or
    unknown field is reported as "section.field: reason" and keeps its default."""
    if specs is None:
        specs = schema()
    clean = defaults(specs)
    errors = []
    if not isinstance(data, dict):
        return clean, [(prefix.rstrip(".") or "config") + ": must be an object"]
    for key, value in data.items():
        name = prefix + str(key)
        spec = specs.get(key)
        if spec is None:
            errors.append(name + ": unknown setting")
        elif isinstance(spec, dict):
            clean[key], sub = validate(value, spec, name + ".")
            errors.extend(sub)
        else:
            reason = _check(spec, value)
            if reason:
                errors.append("%s: %s (got %s)" % (name, reason, _shown(spec, value)))
            else:
                clean[key] = float(value) if spec[0] == "float" else value
    if not prefix and "admin" in specs:  # a whole config: what one field cannot say alone
        errors.extend(cold.load("schema").topic_errors(clean))
        stored = clean["admin"]["password_hash"]
        if stored and not cold.load("auth").well_formed(stored):
            # a password typed into this field would lock every change out; like any invalid
            # field it keeps its default, and flash.py --admin-password sets one again
            errors.append("admin.password_hash: must be a hash the board made "
                          "(sha256$salt$digest); set a new password with "
                          "tools/flash.py --admin-password")
            clean["admin"]["password_hash"] = ""
    return clean, errors


def _shown(spec, value):
    if spec[0] == "secret":
        return SECRET
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"  # of any depth
    return json.dumps(value)


KEPT_IN_SAFE_MODE = ("hostname", "wifi", "http", "uart", "admin")  # the way to fix the board


def load(path):
    """(values, errors, source). Never raises: a missing file gives defaults, a broken one
    defaults plus the errors (app.Config then says safe mode)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return defaults(), [], "defaults (no %s)" % path
    specs = schema()  # read in once for the whole load
    try:
        data = json.loads(text)
    except (ValueError, RuntimeError) as err:  # RuntimeError: nested too deep
        return defaults(specs), ["%s: not valid JSON (%s)" % (path, err)], "defaults"
    values, errors = validate(data, specs)
    if errors:
        # keep what lets the user reach the board and fix it; everything else safe
        safe = defaults(specs)
        for key in KEPT_IN_SAFE_MODE:
            safe[key] = values[key]
        return safe, errors, path + " (invalid: safe mode)"
    return values, [], path


def restored(path, values):
    """What a change made in safe mode starts from: every valid field of the file over the
    defaults, and the values in force for what safe mode kept. Starting from the safe values
    would save defaults over the user's Venus, MQTT and charger settings."""
    try:
        with open(path) as f:
            data = json.loads(f.read())
    except (OSError, ValueError, RuntimeError):
        return values  # nothing readable to keep
    out = validate(data)[0]
    for key in KEPT_IN_SAFE_MODE:
        out[key] = values[key]
    return out


def save(path, values):
    """Validate, then write atomically: a power cut leaves the old file or the new one."""
    clean, errors = validate(values)
    if errors:
        raise ValueError("; ".join(errors))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(clean))
    os.rename(tmp, path)
    return clean


def merged(values, patch, specs=None):
    """`values` with `patch` laid over it (sections merged key by key); a secret sent back as
    "***" keeps its value, so a form that shows secrets redacted can be posted unchanged."""
    if specs is None:
        specs = schema()
    out = {}
    for key, spec in specs.items():
        old = values.get(key)
        if key not in patch:
            out[key] = old
        elif isinstance(spec, dict) and isinstance(patch[key], dict):
            out[key] = merged(old, patch[key], spec)
        elif not isinstance(spec, dict) and spec[0] == "secret" and patch[key] == SECRET:
            out[key] = old
        else:
            out[key] = patch[key]
    for key in patch:
        if key not in specs:
            out[key] = patch[key]  # validate() names it
    return out


def redacted(values, specs=None):
    """A copy fit to leave the board: secrets become "***" when set, "" when not."""
    if specs is None:
        specs = schema()
    out = {}
    for key, spec in specs.items():
        value = values.get(key) if isinstance(values, dict) else None
        if isinstance(spec, dict):
            out[key] = redacted(value or {}, spec)
        elif spec[0] == "secret":
            out[key] = SECRET if value else ""
        else:
            out[key] = value
    return out


def form_schema(specs=None):
    """The schema for the settings form: kind, default and limits of every field."""
    if specs is None:
        specs = schema()
    out = {}
    for key, spec in specs.items():
        if isinstance(spec, dict):
            out[key] = form_schema(spec)
            continue
        field = {"kind": spec[0], "default": spec[1]}
        if spec[0] == "choice":
            field["choices"] = list(spec[2])
        elif spec[0] in ("int", "float"):
            field["min"], field["max"] = spec[2], spec[3]
        else:
            field["max_length"] = spec[2] if len(spec) > 2 else None
        out[key] = field
    return out
