"""Where the master key of encryption at rest (crypto.py) comes from.

`LLMOS_KEY` (32 bytes in base64 or hex) wins. Else the file `LLMOS_HOME/data-key`
(the key that guards the data: it wraps the data keys), created with mode 0600 on
first start. A database that already holds data keys never gets a fresh key file:
without its master key it refuses to start, saying which key is missing."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from pathlib import Path

from llmos.errors import InvalidRequest

log = logging.getLogger(__name__)

KEY_FILE = "data-key"  # under LLMOS_HOME, when LLMOS_KEY is not set
ENV = "LLMOS_KEY"
KEY_BYTES = 32


def master_key(home: Path, env: str | None, has_keys: bool) -> tuple[bytes, str]:
    """The master key and where it came from. `has_keys`: the database holds data
    keys already (so a missing key file is an error, not a first start)."""
    if env:
        return parse_key(env, ENV, ENV), ENV
    path = home / KEY_FILE
    if path.is_file():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s is readable by others (mode %o): chmod 600 it", path, mode)
        return parse_key(path.read_text(), str(path), ENV), str(path)
    if has_keys:
        raise InvalidRequest(
            f"this database's data is encrypted, but there is no master key: set {ENV}"
            f" or restore {path}",
            param=ENV,
        )
    text = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:  # on disk before any data key is wrapped with it
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)
    return base64.b64decode(text), str(path)


def parse_key(text: str, source: str, param: str) -> bytes:
    """32 bytes from base64 (standard or URL-safe) or hex; anything else is refused."""
    text = text.strip()
    decoded: bytes | None = None
    if len(text) == 2 * KEY_BYTES:
        try:
            decoded = bytes.fromhex(text)
        except ValueError:
            decoded = None
    if decoded is None:
        try:
            decoded = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            decoded = None
    if decoded is None or len(decoded) != KEY_BYTES:
        raise InvalidRequest(
            f"{source} must be a {KEY_BYTES}-byte key in base64 (44 characters) or hex"
            f' (64 characters); make one with: python -c "import os, base64;'
            f' print(base64.b64encode(os.urandom(32)).decode())"',
            param=param,
        )
    return decoded
