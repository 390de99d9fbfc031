"""Generation parameters of synthvid (everything that goes into the manifest) and the split names."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from dataset.names import IMAGE_SPLITS
from dataset.synthvid.expressions import KINDS
from dataset.synthvid.hard import HardFrames
from utils.io import UserInputError

SPLITS = IMAGE_SPLITS["synthvid"]  # the splits the set is written in


@dataclass(frozen=True)
class SynthConfig:
    """Generation parameters (all of them go into the manifest)."""

    seed: int = 0
    train_videos: int = 150
    val_videos: int = 40
    test_videos: int = 60
    min_frames: int = 16
    max_frames: int = 24
    expressions_per_video: int = 2
    image_stride: int = 4
    type_mix: tuple[float, float, float] = (0.4, 0.3, 0.3)
    jpeg_quality: int = 90
    eval_frames: tuple[int, int] | None = None  # (MIN, MAX) frames of val/test clips; None: as training
    hard_frames: HardFrames = HardFrames()  # all off by default

    def validate(self) -> None:
        """Raise :class:`UserInputError` naming the flag of the first bad value."""
        for flag, n in (("--train_videos", self.train_videos), ("--val_videos", self.val_videos),
                        ("--test_videos", self.test_videos)):
            if n < 0:
                raise UserInputError(f"{flag} must be >= 0, got {n}")
        if not 2 <= self.min_frames <= self.max_frames:
            raise UserInputError(f"--frames needs 2 <= MIN <= MAX, got {self.min_frames} {self.max_frames}")
        if self.eval_frames is not None and not 2 <= self.eval_frames[0] <= self.eval_frames[1]:
            raise UserInputError(f"--eval_frames needs 2 <= MIN <= MAX, got {list(self.eval_frames)}")
        if not 1 <= self.expressions_per_video <= 3:
            raise UserInputError(f"--expressions must be 1, 2 or 3, got {self.expressions_per_video}")
        if self.image_stride < 1:
            raise UserInputError(f"--image_stride must be >= 1, got {self.image_stride}")
        if len(self.type_mix) != len(KINDS) or min(self.type_mix) < 0 or sum(self.type_mix) <= 0:
            raise UserInputError(f"--type_mix needs 3 non-negative weights (attribute location motion) "
                                 f"with a positive sum, got {list(self.type_mix)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise UserInputError(f"--jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        self.hard_frames.validate()

    def videos(self, split: str) -> int:
        return {"train": self.train_videos, "val": self.val_videos, "test": self.test_videos}[split]

    def frame_range(self, split: str) -> tuple[int, int]:
        """(MIN, MAX) frames per clip of ``split``."""
        if split != "train" and self.eval_frames is not None:
            return self.eval_frames
        return self.min_frames, self.max_frames

    def as_json(self) -> dict[str, Any]:
        """The parameters as JSON; without ``hard_frames`` when they are all off (as before they existed)."""
        params = asdict(self)
        if not self.hard_frames.enabled:
            del params["hard_frames"]
        return json.loads(json.dumps(params))

