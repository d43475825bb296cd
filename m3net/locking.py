"""One writer per file or run folder, enforced by a lock that dies with its process.

A writer holds an exclusive POSIX record lock (``fcntl.lockf``) on a small lock file beside what
it writes (``cache.h5.lock``, ``RUN/.lock``) and records its pid there. POSIX locks belong to the
process: they are not inherited by forked DataLoader workers and vanish when the process dies
(also after ``kill -9``), so a lock is never stale and never needs deleting by hand. A reader
takes a shared lock for a moment to learn whether a writer is at work. The lock file is left in
place on purpose: removing it while another process has it open would let two writers lock two
different files. POSIX locks have one trap: closing *any* descriptor of the lock file drops the
process's lock, so a process never checks (``check_not_being_written``) a file whose lock it holds.
"""
import contextlib
import errno
import fcntl
import os

from m3net.errors import ConfigError, LockError


def _holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid = os.read(fd, 32).decode().strip()
        return f" (pid {pid})" if pid.isdigit() else ""
    except OSError:
        return ""


def _busy(err):
    return err.errno in (errno.EACCES, errno.EAGAIN)


def _held_message(what, fd):
    return (f"another m3net process{_holder(fd)} is writing {what}; wait for it to finish or stop it "
            "(its work so far is kept and a re-run resumes it)")


@contextlib.contextmanager
def exclusive_lock(lock_path, what):
    """Hold the only write lock of ``what`` (named in the error) while the block runs."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ConfigError(f"{what}: cannot create the lock file {lock_path} ({err.strerror}); is the folder "
                          "writable?") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if _busy(err):
                raise LockError(_held_message(what, fd)) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_not_being_written(lock_path, what):
    """Raise LockError when a live process holds the write lock of ``what``; readers call this."""
    if not os.path.exists(lock_path):
        return
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return  # unreadable lock file: nothing tells us a writer is there
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if _busy(err):
            raise LockError(_held_message(what, fd)) from None
        raise
    finally:
        os.close(fd)


def cache_lock_path(cache_path):
    return f"{cache_path}.lock"
