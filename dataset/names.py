"""Dataset and split names (docs/behaviour.md §1): what the loaders accept and the command lines offer."""
from __future__ import annotations

VIDEO_DATASETS = ("VID", "LiOTB")
IMAGE_SPLITS = {  # image dataset -> the splits its index files come in
    "unc": ("train", "val", "trainval", "testA", "testB"),
    "unc+": ("train", "val", "trainval", "testA", "testB"),
    "gref": ("train", "val", "test"),
    "referit": ("train", "val", "trainval", "test"),
    "flickr": ("train", "val", "test"),
    "synthvid": ("train", "val", "test"),
}
IMAGE_DATASETS = tuple(IMAGE_SPLITS)
SPLITS = ("train", "val", "trainval", "test", "testA", "testB")  # every split name of every dataset
