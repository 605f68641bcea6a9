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

    A `path.lock` file beside `path` holds the writer's process id; a lock
    whose process is gone (a killed run) does not block.

    Raises:
        RunLogError: another live process holds the lock.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.lock = self.path.with_name(self.path.name + ".lock")
        self._locked = False

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The lock appears whole, pid inside (a hard link of a written file):
        # another job never reads an empty lock and takes it for a dead one's.
        handle, temporary = tempfile.mkstemp(prefix=f".{self.lock.name}.", dir=self.lock.parent)
        with os.fdopen(handle, "w") as f:
            f.write(str(os.getpid()))
        try:
            for attempt in range(2):  # a dead job's lock is removed, then retried once
                try:
                    os.link(temporary, self.lock)
                    break
                except FileExistsError:
                    if attempt or not self._stale():
                        raise RunLogError(
                            f"{str(self.path)!r} is being written by another job (lock "
                            f"{str(self.lock)!r}); wait for it, or delete the lock if "
                            "no job is running."
                        ) from None
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self.lock)
        finally:
            os.remove(temporary)
        self._locked = True
        return self

    def __exit__(self, *exc):
        if self._locked:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.lock)
            self._locked = False

    def _stale(self):
        try:
            pid = int(self.lock.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, FileNotFoundError):
            return True
        except PermissionError:
            return False
        return False


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
