"""Files written whole or not at all: written beside their place, then renamed over it
(``os.replace``), so a reader or a process killed mid-write sees the old file or the new one.

Example::

    write_atomically(path, lambda fh: fh.write(b"..."))      # on disk, with its folder entry
    write_atomically(path, lambda fh: np.savez(fh, **arrays), durable=False)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object], durable: bool = True) -> None:
    """``write(fh)`` fills the file that then takes ``path``'s place; ``durable``: the file and the
    rename are on disk before this returns (a power cut leaves one or the other, never an empty file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        sync_folder(path.parent)


def sync_folder(path: str | Path) -> None:
    """A folder's entries (files created, renamed or removed in it) on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: str | Path) -> None:
    """Every file under ``folder`` and every folder's entries on disk: before a rename publishes it."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for path in (*sorted(p for p in folder.rglob("*") if p.is_dir()), folder):
        sync_folder(path)
