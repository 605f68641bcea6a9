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


def weights_digest(model):
    """A hash of a model's weights, bit for bit."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


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
        """`(model, points)` of the last finished round, or `None`."""
        state_file = self.folder / STATE
        if not state_file.is_file():
            return None
        state = json.loads(state_file.read_text())
        if state.get("key") != self.key:
            raise ValueError(
                f"{str(self.folder)!r} holds the backup of another compression (other "
                "model, data or arguments): give another `backup_dir`, or delete it "
                "to start again"
            )
        model = keras.saving.load_model(self.folder / MODEL, compile=False)
        return model, state["points"]

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
