"""The local HMAC secret: made once under MYYC_DATA_DIR, readable only by its owner.

In local mode with no MYYC_HMAC_SECRET set, the API and the CLI share this file, so local
requests are signed like production ones without any configuration.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def local_secret(data_dir: Path) -> str:
    """The secret in `data_dir/hmac_secret`, created (0600) on first use."""
    path = data_dir / "hmac_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value
