"""The admin password: stored only as "sha256$<salt>$<digest>", checked from an HTTP
Authorization header (Bearer <password>, or Basic with any user name)."""

import binascii
import hashlib
import os


def _digest(salt, password):
    return binascii.hexlify(hashlib.sha256(salt + password.encode()).digest()).decode()


def make_hash(password, salt=None):
    salt = salt if salt is not None else os.urandom(8)
    return "sha256$%s$%s" % (binascii.hexlify(salt).decode(), _digest(salt, password))


def well_formed(stored):
    """Is `stored` a hash make_hash() could have made (not, say, a password typed instead)?"""
    parts = stored.split("$")
    return (
        len(parts) == 3
        and parts[0] == "sha256"
        and len(parts[2]) == 64
        and all(c in "0123456789abcdef" for c in parts[1] + parts[2])
    )


def verify(password, stored):
    try:
        kind, salt, digest = stored.split("$")
        salt = binascii.unhexlify(salt)
    except (ValueError, AttributeError):
        return False
    if kind != "sha256":
        return False
    given = _digest(salt, password)
    # compare every character, so the time taken does not tell how much matched
    diff = len(given) ^ len(digest)
    for a, b in zip(given, digest):
        diff |= ord(a) ^ ord(b)
    return diff == 0


def password_from_header(value):
    """The password in an Authorization header, or None."""
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return rest.strip() or None
    if scheme == "basic":
        try:
            decoded = binascii.a2b_base64(rest.strip()).decode()
        except (ValueError, UnicodeError):
            return None
        return decoded.partition(":")[2] or None
    return None
