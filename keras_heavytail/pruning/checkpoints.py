"""`compress`'s round backups: a killed compression resumes after its last round.

After each finished round the current (shrunk, fine-tuned) model and the
points so far are written to a folder, the model first, atomically; a rerun
with the same arguments reads them and runs only the rounds left, as
`keras.callbacks.BackupAndRestore` does for epochs. Another compression's
backup in the folder is refused, never overwritten. Only the two files
written here are ever deleted.
"""

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from keras_heavytail import files

MODEL = "round.keras"
STATE = "state.json"


def fingerprint(**settings):
    """A short hash of what makes two jobs the same (settings, `weights_digest`)."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def array_digest(*arrays):
    """A hash of arrays' shapes, dtypes and values, bit for bit."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def file_digest(path):
    """A hash of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def weights_digest(model):
    """A hash of a model's weights, bit for bit."""
    return array_digest(*model.get_weights())


class BackupError(ValueError):
    """A backup folder that belongs to another job, or holds foreign files."""


class RoundBackup:
    """The folder of one compression's round backups.

    Args:
        folder: where the backups go (created on the first save).
        key: the job's `fingerprint`.
    """

    def __init__(self, folder, key):
        self.folder = Path(folder)
        self.key = key
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(
                f"`backup_dir` must be a folder. Received: {str(self.folder)!r} (a file)"
            )

    def load(self):
        """`(model, points)` of the last finished round, or `None`.

        Raises `BackupError` if the folder holds another job's backup, or
        files of these names that are not a backup (never overwritten).
        """
        state_file, model_file = self.folder / STATE, self.folder / MODEL
        if not state_file.exists():
            if model_file.exists():
                raise BackupError(
                    f"{str(self.folder)!r} holds a {MODEL} that is not a compress "
                    "backup; it is left alone: give another `backup_dir`"
                )
            return None
        try:
            state = json.loads(state_file.read_text())
            key, points = state["key"], state["points"]
        except (ValueError, KeyError, TypeError):
            raise BackupError(
                f"{str(self.folder)!r} holds a {STATE} that is not a compress backup; "
                "it is left alone: give another `backup_dir`"
            ) from None
        if key != self.key:
            raise BackupError(
                f"{str(self.folder)!r} holds the backup of another compression (other "
                "model, data or arguments; data in another order counts as other "
                "data, so a dataset that reshuffles every pass never resumes: shuffle "
                "with a seed and `reshuffle_each_iteration=False`): rerun with what "
                "made it, give another `backup_dir`, or delete it to start again"
            )
        return keras.saving.load_model(model_file, compile=False), points

    def save(self, model, points):
        self.folder.mkdir(parents=True, exist_ok=True)
        files.save_model(model, self.folder / MODEL)
        state = {"key": self.key, "points": points}
        files.write_text(self.folder / STATE, json.dumps(state, indent=1) + "\n")

    def delete(self):
        """Removes the backup files, and the folder if nothing else is in it."""
        for name in (STATE, MODEL):
            (self.folder / name).unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
