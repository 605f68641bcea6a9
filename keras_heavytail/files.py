"""Writing files that a crash cannot destroy, and a run log that resumes.

Every file the project writes goes to a temporary file in the target folder
and is renamed into place (`os.replace` is atomic on one file system), so a
crash or a SIGKILL leaves the old file or the new one, never half of one.

`RunLog` is a JSON-lines file of finished runs under a header that records
what was asked for: a rerun with the same header skips the finished runs; a
different one is refused; a lock file refuses a second writer at once.
"""

import contextlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` on success.

    On an exception the temporary file is removed and `path` is untouched.
    The temporary name keeps `path`'s suffix (Keras checks `.keras`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(
            f"{str(path)!r} is a directory; give a file name to write."
        )
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(handle)
    try:
        yield Path(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as open() would create it, not 0600
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_bytes(path, data):
    """Writes `data` to `path` atomically; returns `path`."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically; returns `path`."""
    return write_bytes(path, text.encode("utf-8"))


def save_model(model, path):
    """`model.save(path)`, atomically: a killed save leaves the old file whole."""
    with atomic_path(path) as temporary:
        model.save(temporary)
    return Path(path)


def save_figure(figure, path, **kwargs):
    """`figure.savefig(path)`, atomically."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, **kwargs)
    return Path(path)


@contextlib.contextmanager
def captured_stderr():
    """Captures what C++ code writes to the process's stderr (file descriptor 2).

    TensorFlow's import and the LiteRT converter print logs from C++ that
    Python's `sys.stderr` cannot catch. Yields a list that holds the captured
    text once the block ends. With `KERAS_HEAVYTAIL_VERBOSE=1` nothing is
    captured.
    """
    captured = []
    if os.environ.get("KERAS_HEAVYTAIL_VERBOSE") == "1":
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def quiet_import(name, then=None):
    """Imports module `name` with the process's stderr captured (TensorFlow's
    C++ start-up lines), shown again if the import fails; without a usable
    stderr (a closed descriptor 2), or with `KERAS_HEAVYTAIL_VERBOSE=1`, it
    imports plainly. `then(module)`, if given, runs under the same capture
    (TensorFlow prints more lines when it first looks for devices)."""
    import importlib

    then = then or (lambda module: None)
    try:
        os.fstat(2)
    except OSError:
        module = importlib.import_module(name)
        then(module)
        return module
    failure = None
    with captured_stderr() as log:
        try:
            module = importlib.import_module(name)
            then(module)
        except BaseException as error:  # shown with what it printed
            failure = error
    if failure is not None:
        sys.stderr.write("".join(log))
        raise failure
    return module


def is_run_log(path):
    """Whether `path` is a keras-heavytail run log: its first line a header."""
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(first, dict) and "header" in first


class RunLogError(Exception):
    """A run log that cannot be resumed or written (another job, other args)."""


class Lock:
    """Refuses a second writer of `path` while a first one runs.

    The writer holds an exclusive `flock` on a `path.lock` file beside
    `path` (its process id inside, for people). The kernel releases the lock
    when the process ends however it ends, so a killed run's lock file does
    not block, and two jobs that find it at once cannot both take it.
    POSIX only (`fcntl`).

    Raises:
        RunLogError: another live process holds the lock.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.lock = self.path.with_name(self.path.name + ".lock")
        self._handle = None

    def __enter__(self):
        import fcntl

        if not self.path.name:
            raise RunLogError(f"A lock needs a file path. Received: {str(self.path)!r}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunLogError(
                f"Cannot make the folder {str(self.path.parent)!r} for {str(self.path)!r} "
                f"({error.strerror}): choose an output in a folder you can write."
            ) from None
        while True:
            if os.path.islink(self.lock):  # its target would be truncated: a user's file
                raise RunLogError(
                    f"The lock {str(self.lock)!r} of {str(self.path)!r} is a symbolic link, "
                    "not a lock this library wrote; remove it."
                )
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            try:
                handle = os.open(self.lock, flags, 0o666)
            except IsADirectoryError:
                raise RunLogError(
                    f"The lock {str(self.lock)!r} of {str(self.path)!r} is a folder, "
                    "not a lock this library wrote; remove or rename it."
                ) from None
            except OSError as error:  # unwritable, a socket, a missing parent...
                raise RunLogError(
                    f"Cannot write the lock {str(self.lock)!r} of {str(self.path)!r} "
                    f"({error.strerror}): make it and its folder writable, or choose "
                    "another output."
                ) from None
            if not stat.S_ISREG(os.fstat(handle).st_mode):  # a fifo, a device
                os.close(handle)
                raise RunLogError(
                    f"The lock {str(self.lock)!r} of {str(self.path)!r} is not a regular "
                    "file, not a lock this library wrote; remove or rename it."
                )
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(handle, 32).decode("ascii", "replace").strip()
                os.close(handle)
                raise RunLogError(
                    f"{str(self.path)!r} is being written by another job (process "
                    f"{holder or '?'}, lock {str(self.lock)!r}); wait for it to finish."
                ) from None
            # The last holder may have removed the file after we opened it:
            # then this lock is on a name nobody else sees; open the new one.
            try:
                current = os.stat(self.lock).st_ino == os.fstat(handle).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(handle)
        # This library writes a process id alone: anything longer or else is a user's.
        holder = os.read(handle, 64).decode("ascii", "replace").strip()
        if os.fstat(handle).st_size > 32 or (holder and not holder.isdigit()):
            os.close(handle)
            raise RunLogError(
                f"{str(self.lock)!r} holds something other than a process id: a file "
                f"of yours, not a lock this library wrote. Rename it, or choose another "
                "output."
            )
        os.ftruncate(handle, 0)
        os.lseek(handle, 0, os.SEEK_SET)
        os.write(handle, str(os.getpid()).encode())
        self._handle = handle
        return self

    def __exit__(self, *exc):
        if self._handle is not None:
            # While still held: the next job makes a new one. In a folder made
            # read-only meanwhile it stays (empty of a live holder: harmless).
            with contextlib.suppress(OSError):
                os.remove(self.lock)
            os.close(self._handle)
            self._handle = None


class RunLog:
    """A resumable JSON-lines log of finished runs under a header.

    The first line is `{"header": ...}`: what the job was asked to do. Each
    later line is one finished run, appended and flushed as soon as it is
    measured, so a crash loses at most the run in progress.

    Args:
        path: the `.jsonl` file. Defaults to none; required.
        header: a JSON-able dict describing the job (its arguments).

    Raises:
        RunLogError: the file holds another job's runs, or another process
            holds the lock.
    """

    def __init__(self, path, header):
        self.path = Path(path)
        self.header = json.loads(json.dumps(header, default=str))
        self._lock = Lock(self.path)
        self.lock = self._lock.lock
        self.rows = []

    def __enter__(self):
        self._lock.__enter__()
        try:
            self._open()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        self._lock.__exit__(*exc)

    def _open(self):
        if not self.path.exists() or self.path.stat().st_size == 0:
            write_text(self.path, json.dumps({"header": self.header}) + "\n")
            return
        lines = self.path.read_text().splitlines()
        try:
            found = json.loads(lines[0])["header"]
        except (ValueError, KeyError, TypeError, IndexError):
            raise RunLogError(
                f"{str(self.path)!r} is not a keras-heavytail run log; choose "
                "another output folder."
            ) from None
        if found != self.header:
            changed = sorted(
                k
                for k in set(found) | set(self.header)
                if found.get(k) != self.header.get(k)
            )
            raise RunLogError(
                f"{str(self.path)!r} holds runs of a different job (differs in: "
                f"{', '.join(changed)}). Rerun with the same arguments to resume, or "
                "choose another output folder; nothing was changed."
            )
        for line in lines[1:]:
            try:
                self.rows.append(json.loads(line))
            except ValueError:  # a line cut by a crash: that run reruns
                break
        # Rewrite without a cut last line, so appends start on a fresh line.
        write_text(
            self.path,
            "\n".join([lines[0]] + [json.dumps(r) for r in self.rows]) + "\n",
        )

    def find(self, **key):
        """The finished row whose fields equal `key`, or `None`."""
        for row in self.rows:
            if all(row.get(k) == v for k, v in key.items()):
                return row
        return None

    def append(self, row):
        """Records a finished run: appended, flushed and synced at once."""
        row = json.loads(json.dumps(row, default=str))
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)
        return row
