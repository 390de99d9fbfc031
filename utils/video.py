"""Videos through PyAV (FFmpeg's libraries, libx264 included in its wheels): reading with timestamps, and
annotated videos that play everywhere: H.264 (yuv420p) in .mp4.

Browsers, GitHub and chat previews play H.264 + yuv420p and refuse OpenCV's default ``mp4v`` (MPEG-4 Part 2).
Where the installed FFmpeg lacks libx264 an .mp4 request is written as VP9 in .webm instead, with a one-line
note; .webm asks for VP9 directly, .mkv holds H.264 too, .avi holds Motion JPEG (every player reads it).
The file is written under a unique temporary name beside the target (``utils.io.atomic_file``: writer pid plus
a random part) and renamed onto it only when complete.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import cv2
import numpy as np

from utils.io import UserInputError, atomic_file

# suffix -> (container format, codec, pixel format)
FORMATS = {
    ".mp4": ("mp4", "libx264", "yuv420p"),
    ".mkv": ("matroska", "libx264", "yuv420p"),
    ".webm": ("webm", "libvpx-vp9", "yuv420p"),
    ".avi": ("avi", "mjpeg", "yuvj420p"),
}
CODEC_OPTIONS = {
    "libx264": {"crf": "23", "preset": "veryfast"},
    "libvpx-vp9": {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    "mjpeg": {"q": "3"},
}
FALLBACK = ".webm"  # where libx264 is missing
VIDEO_SUFFIXES = tuple(FORMATS)


def encoder_available(codec: str) -> bool:
    """Whether this PyAV build can encode with ``codec``."""
    try:
        av.codec.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError):  # unknown codec, or a decoder only
        return False
    return True


def output_path(path: str | os.PathLike) -> Path:
    """Where a video asked for at ``path`` is written: ``path`` itself, or its .webm sibling where H.264 is
    unavailable. A suffix outside :data:`VIDEO_SUFFIXES` is an error."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UserInputError(f"video {path}: the suffix must be one of {', '.join(FORMATS)}")
    if FORMATS[suffix][1] == "libx264" and not encoder_available("libx264"):
        return path.with_suffix(FALLBACK)
    return path


def even_size(width: int, height: int) -> tuple[int, int]:
    """The encoded size: each odd side grows by one pixel (yuv420p halves both sides for colour)."""
    return width + width % 2, height + height % 2


def pad_to_even(img: np.ndarray) -> np.ndarray:
    """``img`` (H x W x 3) with one black row at the bottom and/or one black column at the right where H or W is
    odd: padding, never cropping, so no drawn box or pixel of the frame is lost."""
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)))


class VideoWriter(contextlib.AbstractContextManager):
    """Write BGR frames (H x W x 3 uint8, as OpenCV decodes them) to ``path`` at ``fps``.

    The codec follows the suffix (:data:`FORMATS`); ``path`` becomes the .webm sibling where H.264 cannot be
    encoded here (``self.path`` is where the video lands). Frames of odd width or height are padded by one black
    pixel row/column to an even size (:func:`pad_to_even`); every frame must have the first frame's size. As a
    context manager the file is published atomically on success and removed on an error.
    """

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        asked = Path(path)
        self.path = output_path(asked)
        if self.path != asked:
            print(f"note: H.264 (libx264) is not available in this PyAV build: writing VP9 to {self.path} "
                  f"instead of {asked}", file=sys.stderr)
        self.container_format, self.codec, self.pix_fmt = FORMATS[self.path.suffix.lower()]
        self.fps = Fraction(fps).limit_denominator(1001)
        self.size: tuple[int, int] | None = None  # (W, H) of the input frames, set by the first frame
        self.frames = 0
        self._file: contextlib.AbstractContextManager[IO] | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None

    def _open(self, width: int, height: int) -> None:
        file = atomic_file(self.path, "wb")
        handle = file.__enter__()
        try:
            self._container = av.open(handle, "w", format=self.container_format)
            stream = self._container.add_stream(self.codec, rate=self.fps, options=CODEC_OPTIONS[self.codec])
            stream.width, stream.height = even_size(width, height)
            stream.pix_fmt = self.pix_fmt
        except BaseException as err:
            file.__exit__(type(err), err, err.__traceback__)
            raise
        self._file, self._stream, self.size = file, stream, (width, height)

    def write(self, img: np.ndarray) -> None:
        """Append one BGR frame."""
        h, w = img.shape[:2]
        if self._container is None:
            self._open(w, h)
        elif (w, h) != self.size:
            raise UserInputError(f"video {self.path}: frame of {w}x{h} pixels in a video of "
                                 f"{self.size[0]}x{self.size[1]} (the frames of a folder must have one size)")
        img = pad_to_even(img)
        if self.pix_fmt == "yuv420p":  # OpenCV's BT.601 conversion rounds exactly; swscale's default is ~3 levels dark
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self, error: BaseException | None = None) -> None:
        """Flush the encoder and publish the file (or, after ``error``, remove it)."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            try:
                if error is None:
                    self._container.mux(self._stream.encode(None))
            finally:
                self._container.close()
        except BaseException as err:
            file.__exit__(type(err), err, err.__traceback__)
            raise
        if error is None:
            file.__exit__(None, None, None)
        else:
            file.__exit__(type(error), error, error.__traceback__)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None and exc is None:
            exc = exc_type()
        self.close(exc)


def write_video(path: str | os.PathLike, frames: list[np.ndarray], fps: float) -> Path:
    """All of ``frames`` (BGR) as one video; returns where it was written (see :class:`VideoWriter`)."""
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError):
        raise UserInputError(f"video {path} cannot be decoded (not a video, or a codec this FFmpeg lacks)") from None
    if not container.streams.video:
        container.close()
        raise UserInputError(f"video {path} cannot be decoded: it holds no video stream")
    return container


def probe_video(path: str | os.PathLike) -> tuple[float | None, int | None]:
    """The frame rate and frame count of a video file as its header says (None where it does not say; the count
    is a progress-bar total, not trusted). A file FFmpeg cannot open is an error naming it."""
    with _open_input(Path(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return (float(rate) if rate else None), (stream.frames or None)


def read_video(path: str | os.PathLike) -> Iterator[tuple[np.ndarray, float | None]]:
    """Each frame of a video file's first video stream, decoded in order: (H x W x 3 uint8 BGR, the same pixels
    OpenCV's reader gives, and its presentation time in seconds from the first frame, from the container's
    timestamps, so variable frame rates are right; None where the container has none).

    Packets that fail to decode are skipped, as OpenCV's reader does; a video none of whose frames decode is an
    error naming it.
    """
    path = Path(path)
    count, first = 0, None
    with _open_input(path) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue
            for frame in frames:
                if frame.time is not None and first is None:
                    first = frame.time
                count += 1
                yield frame.to_ndarray(format="bgr24"), None if frame.time is None else frame.time - first
    if count == 0:
        raise UserInputError(f"video {path} has no frames that can be decoded")
