"""Resume for the ``distilled_judge`` recipe, one held-out fold at a time.

Each finished fold's held-out predictions are kept in ``DIR/folds/fold-K.npz`` (written to a
temporary file, then renamed over, so a kill leaves either the whole file or none) with the
digest of what they depend on: the config, the training data's bytes and the feature set. A
rerun of the same command skips the folds whose file carries the same digest and computes
the rest, so its figures are those of an uninterrupted run. A fold file with another digest
(the data or the features changed under an unchanged config) is refused rather than mixed
in, as :func:`simfarm.training.run.run_recipe` refuses another config in the same folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from simfarm.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

FOLDS_DIR = "folds"


def run_digest(config_digest: str, data_sha256: str) -> str:
    """sha256 of what a fold's predictions depend on: the config's digest, the training
    data's digest and the feature set (names, token limit, n-gram buckets)."""
    from simfarm.annotation.distilled_features import FEATURE_NAMES, MAX_TOKENS, NGRAM_BUCKETS

    payload = {
        "config": config_digest,
        "data": data_sha256,
        "features": list(FEATURE_NAMES),
        "max_tokens": MAX_TOKENS,
        "ngram_buckets": NGRAM_BUCKETS,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class FoldStore:
    """The held-out predictions of finished folds, in ``out_dir/folds/``."""

    def __init__(self, out_dir: Path, digest: str, with_board: bool = False) -> None:
        self.folder = Path(out_dir) / FOLDS_DIR
        self.digest = digest
        self.with_board = with_board
        """Folds also hold their predictions on ``data.test_leaderboard`` pairs."""

    def path(self, fold: int) -> Path:
        return self.folder / f"fold-{fold}.npz"

    def load(self, fold: int, test: np.ndarray) -> np.ndarray | None:
        """The fold's saved predictions on ``test`` (None when it has not finished)."""
        import numpy as np

        path = self.path(fold)
        if not path.is_file():
            return None
        try:
            with np.load(path) as saved:
                digest, saved_test, prob = str(saved["digest"]), saved["test"], saved["prob"]
                missing_board = self.with_board and "board_prob" not in saved.files
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None  # unreadable: computed again and rewritten
        if missing_board:
            return None  # saved without its leaderboard predictions: computed again
        if digest != self.digest:
            raise ConfigError(
                f"{path}: held-out predictions of other data or features (digest "
                f"{digest[:12]}, this run {self.digest[:12]}); use a new --out folder, or "
                f"delete {self.folder} to start the held-out folds over"
            )
        if not np.array_equal(saved_test, test) or len(prob) != len(test):
            return None
        return prob  # type: ignore[no-any-return]

    def load_board(self, fold: int, board_index: np.ndarray) -> np.ndarray:
        """The fold's saved predictions on the leaderboard pairs ``board_index`` (call only
        after :meth:`load` returned predictions, so the file is this run's)."""
        import numpy as np

        with np.load(self.path(fold)) as saved:
            if not np.array_equal(saved["board_index"], board_index):
                raise ConfigError(
                    f"{self.path(fold)}: its leaderboard pairs differ from this run's; "
                    f"delete {self.folder} to start the held-out folds over"
                )
            return saved["board_prob"]  # type: ignore[no-any-return]

    def save(
        self,
        fold: int,
        test: np.ndarray,
        prob: np.ndarray,
        board_index: np.ndarray | None = None,
        board_prob: np.ndarray | None = None,
    ) -> None:
        """Keep a finished fold's predictions (atomically: temp file, fsync, rename)."""
        import numpy as np

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(fold)
        tmp = path.with_name(f"{path.name}.tmp")
        with tmp.open("wb") as handle:
            if self.with_board:
                np.savez(
                    handle,
                    digest=np.array(self.digest),
                    test=test,
                    prob=prob,
                    board_index=np.asarray(board_index, dtype=np.int64),
                    board_prob=np.asarray(board_prob, dtype=np.float64),
                )
            else:
                np.savez(handle, digest=np.array(self.digest), test=test, prob=prob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
