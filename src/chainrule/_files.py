"""Writing a file whole or not at all: the one writer behind checkpoints, drawings and explorer pages.

``write_atomically(path, chunks)`` writes the new content to a temporary file in the target's
folder (a rename is atomic only within one file system), flushes it to disk, and renames it
over the target in one step (``os.replace``). So a reader, or a crash, sees the old file or
the new one, never half of one. Like an editor, it writes *through* a symlink: the link stays
a link, and the file it points to gets the new content. An existing file keeps its
permissions; a new one gets the usual ones (0o666 less the umask). Only regular files are
written: a FIFO, a device or a socket at the path is refused, and a folder raises
``IsADirectoryError``.

A temporary file is named from a digest of the target's name, the same for every write of
that target, and locked while its write runs; the next write removes those a killed process
left behind (a lock that can be taken belongs to no running write).

>>> import os, tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     path = os.path.join(folder, "notes.txt")
...     write_atomically(path, [b"hello, ", b"world"], what="the notes")
...     with open(path, "rb") as file:
...         file.read()
b'hello, world'
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterable

try:
    import fcntl  # POSIX file locks, to tell a killed write's temporary file from a live one
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["NotRegularFileError", "file_kind", "write_atomically"]


class NotRegularFileError(ValueError):
    """The path names a FIFO, a device or a socket, which a write (or a read) must not use."""


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a non-regular, non-folder file is, in words, from its ``st_mode``."""
    return next((name for is_kind, name in _SPECIAL_FILES if is_kind(mode)), "a special file")


def refuse_special_file(mode: int, path: str, context: str) -> None:
    """Raise unless ``mode`` (an ``st_mode``) is a regular file's; ``context`` starts the message.

    A folder raises ``IsADirectoryError``; a FIFO, device or socket ``NotRegularFileError``.
    """
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    raise NotRegularFileError(f"{context}{path} is {file_kind(mode)}, not a regular file")


def final_target(path: str) -> str:
    """The file a write to ``path`` replaces: for a symlink (or a chain of them), the file it points to."""
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise IsADirectoryError(errno.EISDIR, "the path must name a file, not a folder", path)
    target = os.path.realpath(path)
    if os.path.islink(target):  # realpath stops where links go round in a loop
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    return target


# ---------------------------------------------------------------------------------------------
# Temporary files


_TEMPORARY_SUFFIX = ".tmp"


def temporary_prefix(name: str) -> str:
    """The start of the temporary files' names for a target called ``name``.

    A digest keeps it short for any name (the longest file name is 255 bytes on most file
    systems), and the same for every write of that target, so the next write can find the
    files that a killed one left behind.
    """
    return f".chainrule-{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}-"


def _still_named(path: str, fd: int) -> bool:
    """Whether ``path`` still names the open file ``fd`` (another write may have removed it)."""
    try:
        return os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(fd))
    except FileNotFoundError:
        return False


def _lock(fd: int, wait: bool) -> bool:
    """Lock an open file for this process alone; False if another holds it or the system has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _create_temporary(folder: str, name: str) -> tuple[int, str]:
    """A new, empty temporary file for a target called ``name``, locked while this write runs.

    The lock tells other writes of the same target that the file is in use; the system drops
    it when the process ends, however it ends.
    """
    prefix = temporary_prefix(name)
    while True:
        temporary = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}{_TEMPORARY_SUFFIX}")
        # Mode 0o666 lets the user's umask set the permissions, as for any new file; O_EXCL
        # makes sure we never write into someone else's file.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        if fcntl is None or not _lock(fd, wait=True) or _still_named(temporary, fd):
            return fd, temporary
        # Another write, cleaning up, removed the file between our creating and locking it.
        os.close(fd)


def _remove_stale_temporaries(folder: str, name: str) -> None:
    """Delete the temporary files that killed writes of the target ``name`` left behind.

    A running write holds the lock on its temporary file until the rename, so a file that can
    be locked belongs to no running write. Without locks (Windows) nothing is removed.
    """
    if fcntl is None:
        return
    prefix = temporary_prefix(name)
    with contextlib.suppress(OSError):  # an unreadable folder: creating the new file will say why
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(_TEMPORARY_SUFFIX)]
        for entry in names:
            candidate = os.path.join(folder, entry)
            with contextlib.suppress(OSError):  # gone already, a symlink, or not ours to remove
                fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    regular = stat.S_ISREG(os.fstat(fd).st_mode)
                    if regular and _lock(fd, wait=False) and _still_named(candidate, fd):
                        os.unlink(candidate)
                finally:
                    os.close(fd)


# ---------------------------------------------------------------------------------------------
# Writing


def _sync_folder(folder: str) -> None:
    """Flush the folder's list of names to disk, so the rename itself survives a power cut."""
    if os.name != "posix":  # elsewhere a folder cannot be opened for fsync
        return
    with contextlib.suppress(OSError):  # some file systems refuse; the file's data is already safe
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_error(error: OSError, path: str, folder: str, what: str | None) -> OSError:
    """``error`` again (the same subclass, by its errno), naming the user's path, not the temporary file."""
    if error.errno is None:
        return error
    reason = error.strerror
    if error.errno in (errno.ENOENT, errno.ENOTDIR) and not os.path.isdir(folder):
        reason = "no such folder" if error.errno == errno.ENOENT else "a part of the path is not a folder"
    return OSError(error.errno, f"cannot save {what}: {reason}" if what else reason, path)


def write_atomically(path: str | os.PathLike, chunks: Iterable[bytes], *, what: str | None = None) -> None:
    """Write ``chunks`` to ``path`` so that ``path`` holds either its old content or all of the new.

    ``what``, if given, names the file in messages (``cannot save the checkpoint: ...``). An
    ``OSError`` names ``path``, never the temporary file, which the user has not heard of. Any
    exception while ``chunks`` are made or written (a ``KeyboardInterrupt`` too) removes the
    temporary file and leaves ``path`` as it was.
    """
    path = os.fsdecode(path)
    target = final_target(path)
    folder, name = os.path.split(target)
    try:
        try:
            existing = os.stat(target)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            refuse_special_file(existing.st_mode, path, f"cannot save {what}: " if what else "")
        _remove_stale_temporaries(folder, name)
        fd, temporary = _create_temporary(folder, name)
    except OSError as error:
        raise _write_error(error, path, folder, what) from None
    try:
        # On POSIX the file stays open, and locked, until the rename; Windows cannot rename an
        # open file (and has no lock to keep).
        with open(fd, "wb", closefd=fcntl is None) as file:
            if existing is not None and hasattr(os, "fchmod"):
                os.fchmod(fd, stat.S_IMODE(existing.st_mode))
            for chunk in chunks:
                file.write(chunk)
            file.flush()
            os.fsync(fd)  # the data is on disk before the new name points at it
        os.replace(temporary, target)
    except BaseException as error:  # including KeyboardInterrupt: never leave a half-written file behind
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _write_error(error, path, folder, what) from None
        raise
    finally:
        if fcntl is not None:
            os.close(fd)
    _sync_folder(folder)
