"""utils/video.py: annotated videos are H.264 yuv420p in .mp4 (what browsers play), every frame kept, odd sizes
padded to even, written atomically."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from utils.io import UserInputError
from utils.video import VideoWriter, encoder_available, pad_to_even, probe_video, read_video, write_video


def frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """BGR frames whose grey level rises by 20 per frame."""
    return [np.full((height, width, 3), 20 * t, np.uint8) for t in range(count)]


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "size": (stream.width, stream.height), "rate": stream.average_rate, "frames": decoded,
                "format": container.format.name}


def test_libx264_is_in_the_pyav_build() -> None:
    assert encoder_available("libx264")


def test_mp4_is_h264_yuv420p_with_every_frame_at_its_size_and_rate(tmp_path: Path) -> None:
    path = write_video(tmp_path / "out.mp4", frames(7, 64, 48), fps=12.5)
    got = probe(path)
    assert path == tmp_path / "out.mp4"
    assert (got["codec"], got["pix_fmt"], got["size"], got["rate"]) == ("h264", "yuv420p", (64, 48), 12.5)
    assert len(got["frames"]) == 7
    # lossy, but each frame's grey level within 2 of what was written (no colour-range shift)
    assert [f.mean() for f in got["frames"]] == pytest.approx([0, 20, 40, 60, 80, 100, 120], abs=2)


def test_odd_sizes_are_padded_by_one_black_row_and_column(tmp_path: Path) -> None:
    img = np.full((47, 63, 3), 200, np.uint8)
    padded = pad_to_even(img)
    assert padded.shape == (48, 64, 3)
    assert (padded[:47, :63] == 200).all() and padded[47].max() == 0 and padded[:, 63].max() == 0
    got = probe(write_video(tmp_path / "odd.mp4", [img] * 3, fps=10))
    assert got["size"] == (64, 48) and len(got["frames"]) == 3


@pytest.mark.parametrize(("suffix", "codec"), [(".webm", "vp9"), (".mkv", "h264"), (".avi", "mjpeg")])
def test_other_containers_get_their_codec(tmp_path: Path, suffix: str, codec: str) -> None:
    got = probe(write_video(tmp_path / f"out{suffix}", frames(5, 32, 24), fps=10))
    assert (got["codec"], len(got["frames"]), got["size"]) == (codec, 5, (32, 24))


def test_without_libx264_an_mp4_becomes_vp9_webm_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr("utils.video.encoder_available", lambda codec: codec != "libx264")
    path = write_video(tmp_path / "out.mp4", frames(4, 32, 24), fps=10)
    assert path == tmp_path / "out.webm" and not (tmp_path / "out.mp4").exists()
    assert probe(path)["codec"] == "vp9"
    assert capsys.readouterr().err.count("\n") == 1


def test_an_error_leaves_no_file_and_no_temporary(tmp_path: Path) -> None:
    with pytest.raises(KeyError), VideoWriter(tmp_path / "out.mp4", 10) as writer:
        writer.write(frames(1, 32, 24)[0])
        raise KeyError("stop")
    assert list(tmp_path.iterdir()) == []


def test_a_frame_of_another_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="frame of 30x24 pixels in a video of 32x24"), \
            VideoWriter(tmp_path / "out.mp4", 10) as writer:
        writer.write(frames(1, 32, 24)[0])
        writer.write(frames(1, 30, 24)[0])
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"out\.mov: the suffix must be one of \.mp4"):
        VideoWriter(tmp_path / "out.mov", 10)


def test_reading_gives_opencvs_pixels_and_the_header_rate_and_count(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", [np.random.default_rng(t).integers(0, 256, (48, 64, 3), np.uint8)
                                               for t in range(6)], fps=12.5)
    capture = cv2.VideoCapture(str(path))
    expected = [capture.read()[1] for _ in range(6)]
    got = list(read_video(path))
    assert probe_video(path) == (12.5, 6)
    assert all((image == reference).all() for (image, _), reference in zip(got, expected)) and len(got) == 6
    assert [time for _, time in got] == pytest.approx([0.0, 0.08, 0.16, 0.24, 0.32, 0.40])


def test_reading_gives_the_timestamps_of_a_variable_frame_rate_video(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=1000)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for pts in (0, 100, 250, 600):  # ms: 10, 6.7, then 2.9 frames/s
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="bgr24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert [time for _, time in read_video(path)] == pytest.approx([0.0, 0.1, 0.25, 0.6])


def test_a_file_that_is_no_video_and_a_video_without_frames_are_named(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_bytes(b"not a video\n" * 50)
    with pytest.raises(UserInputError, match=r"video .*notes\.mp4 cannot be decoded"):
        probe_video(text)
    broken = write_video(tmp_path / "broken.mp4", frames(4, 64, 48), fps=10)
    data = bytearray(broken.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    data[start:end] = bytes(end - start)  # the coded frames zeroed, the index (after them) kept
    broken.write_bytes(bytes(data))
    with pytest.raises(UserInputError, match=r"video .*broken\.mp4 has no frames that can be decoded"):
        list(read_video(broken))
