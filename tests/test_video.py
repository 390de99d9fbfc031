"""utils/video.py: annotated videos are H.264 yuv420p in .mp4 (what browsers play), every frame kept, odd sizes
padded to even, written atomically."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from utils.io import UserInputError
from utils.video import VideoWriter, encoder_available, pad_to_even, write_video


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
