"""Over-the-air update of the application files, A/B: the new files go into the app directory
that is not running, each checked against the bundle's sha256 as it arrives and again before the
switch; the switch is one atomic rename of ota.json. The board's main.py (bootstrap.py, never
replaced by an update) runs the active directory, counts the boots of a new one, and goes back
to the previous one if it does not report healthy (`confirm()`) within MAX_TRIAL_BOOTS boots.
A partial or corrupt upload never touches the running files.
"""

import json
import os

STATE = "ota.json"
DIRS = ("app_a", "app_b")
MAX_TRIAL_BOOTS = 3
MAX_FILES = 64
MAX_FILE_BYTES = 262144
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./"
CHUNK = 1024


class UpdateError(Exception):
    pass


def load_state(path=STATE):
    try:
        with open(path) as f:
            state = json.loads(f.read())
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict) or state.get("active") not in DIRS:
        state = {"active": DIRS[0]}
    return state


def save_state(state, path=STATE):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(state))
    os.rename(tmp, path)  # atomic on LittleFS: the old state or the new, never none


def other(active):
    return DIRS[1] if active == DIRS[0] else DIRS[0]


def sha256_file(path):
    import hashlib
    from binascii import hexlify

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return hexlify(h.digest()).decode()


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove_tree(path):
    if not _exists(path):
        return
    for entry in os.listdir(path):
        full = path + "/" + entry
        if os.stat(full)[0] & 0x4000:  # a directory
            _remove_tree(full)
        else:
            os.remove(full)
    os.rmdir(path)


def _check_name(name):
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise UpdateError("bad file name")
    if name.startswith("/") or ".." in name or any(c not in NAME_CHARS for c in name):
        raise UpdateError("bad file name %r" % name)


class Updater:
    """One update at a time: begin(manifest) -> receive(name, stream, size)... -> commit()."""

    def __init__(self, root=""):
        self.root = root  # "" on the board (cwd is /); a directory in tests
        booted = self.state  # what the bootstrap chose for this boot
        self.running = booted["active"]
        self.running_version = booted.get("version")
        self.manifest = None
        self.received = {}
        self.last_error = None

    def _path(self, *parts):
        return "/".join(p for p in (self.root,) + parts if p)

    @property
    def state_path(self):
        return self._path(STATE)

    @property
    def state(self):
        return load_state(self.state_path)

    @property
    def staging(self):
        return other(self.running)  # never the directory this boot runs from

    def begin(self, manifest):
        """A new bundle: {"version": "...", "files": {name: sha256hex}}; the inactive
        directory is emptied for it."""
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise UpdateError('send {"version": "...", "files": {"name": "sha256", ...}}')
        files = manifest["files"]
        if not files or len(files) > MAX_FILES:
            raise UpdateError("a bundle has 1..%d files" % MAX_FILES)
        for name, digest in files.items():
            _check_name(name)
            if not isinstance(digest, str) or len(digest) != 64:
                raise UpdateError("%s: the sha256 must be 64 hex digits" % name)
        if "main.py" not in files:
            raise UpdateError("the bundle has no main.py")
        state = self.state
        if state["active"] != self.running:
            raise UpdateError("an update is switched to and waits for the reboot")
        if state.get("trial"):
            # staging empties the directory a rollback would go back to. The firmware on
            # trial answers and is updated from: it is the one to go back to from now on
            confirm(self.state_path)
        staging = self._path(self.staging)
        _remove_tree(staging)
        os.mkdir(staging)
        self.manifest = {"version": str(manifest.get("version", "?"))[:32], "files": files}
        self.received = {}
        self.last_error = None

    async def receive(self, name, stream, size):
        """Write one file from `stream` (async read(n)) into the staging directory, hashing it
        as it arrives; a file that does not match its sha256 is deleted."""
        if self.manifest is None:
            raise UpdateError("no update begun")
        _check_name(name)
        expected = self.manifest["files"].get(name)
        if expected is None:
            raise UpdateError("%s is not in the bundle" % name)
        if not 0 <= size <= MAX_FILE_BYTES:
            raise UpdateError("%s: %d bytes, at most %d" % (name, size, MAX_FILE_BYTES))
        import hashlib
        from binascii import hexlify

        target = self._path(self.staging, name)
        self._make_parents(name)
        h = hashlib.sha256()
        left = size
        with open(target, "wb") as f:
            while left:
                chunk = await stream.read(min(CHUNK, left))
                if not chunk:
                    break
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        digest = hexlify(h.digest()).decode()
        if left or digest != expected:
            os.remove(target)
            why = "%d bytes missing" % left if left else "sha256 %s, expected %s" % (
                digest[:12], expected[:12])
            raise UpdateError("%s: %s" % (name, why))
        self.received[name] = digest

    def _make_parents(self, name):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            path = self._path(self.staging, "/".join(parts[:i]))
            if not _exists(path):
                os.mkdir(path)

    def commit(self):
        """Every file there and right (hashed again from flash), then the switch. The caller
        reboots."""
        if self.manifest is None:
            raise UpdateError("no update begun")
        staging = self.staging
        for name, digest in self.manifest["files"].items():
            path = self._path(staging, name)
            if not _exists(path):
                raise UpdateError("%s has not been sent" % name)
            if sha256_file(path) != digest:
                raise UpdateError("%s changed on flash after it was checked" % name)
        state = self.state
        new = {
            "active": staging,
            "previous": state["active"],
            "trial": True,
            "boots": 0,
            "version": self.manifest["version"],
        }
        save_state(new, self.state_path)
        self.manifest = None
        return new

    def status(self):
        s = self.state
        return {
            "running": self.running,  # this boot's directory and version
            "version": self.running_version,
            "active": s["active"],  # the next boot's
            "next_version": s.get("version"),
            "trial": bool(s.get("trial")),
            "boots": s.get("boots", 0),
            "rolled_back": s.get("rolled_back"),
            "staging": self.manifest is not None,
            "received": len(self.received),
            "expected": len(self.manifest["files"]) if self.manifest else 0,
            "last_error": self.last_error,
        }


def confirm(path=STATE):
    """The running firmware is healthy: it stays, and the boots that ran out of memory before
    (bootstrap.py) are forgotten. Called by the app once it has run a while."""
    state = load_state(path)
    trial = state.get("trial")
    if trial or state.get("oom"):
        state["trial"] = False
        state["boots"] = 0
        state.pop("oom", None)
        save_state(state, path)
    return bool(trial)
