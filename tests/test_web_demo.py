"""web_demo.py's page and API, in-process with FastAPI's test client: a clip and two sentences give an H.264 video,
per-frame rows and JSON Lines; every bad input is one sentence on the page and the server keeps serving; nothing
from a request names a file; uploads and outputs are removed on expiry and at exit."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import pytest
import torch

from tests.helpers import require

require("fastapi", "the web demo's optional requirements: pip install -r requirements-web.txt")
require("httpx2", "FastAPI's test client: pip install -r requirements-dev.txt")

from fastapi.testclient import TestClient  # noqa: E402

import web_demo  # noqa: E402
from app import web  # noqa: E402
from app.grounder import Grounder  # noqa: E402
from tests.test_grounder import write_checkpoint  # noqa: E402
from utils.cli import run_main  # noqa: E402
from utils.video import write_video  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SENTENCES = "the red circle\nthe big blue square"


@pytest.fixture(scope="module")
def checkpoint(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("web") / "video.pth.tar", "video", tiny_root, "VID")


@pytest.fixture(scope="module")
def clip(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-frame H.264 clip of a synthetic test video, 10 frames/s."""
    frames, _ = web.test_clips(tiny_root)[-1]
    images = [cv2.imread(str(f)) for f in frames][:5]
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", images, 10.0)


@pytest.fixture
def jobs(checkpoint: Path, tiny_root: Path, tmp_path: Path) -> web.JobQueue:
    grounder = Grounder.from_checkpoint(checkpoint, batch_size=4)
    return web.JobQueue(grounder, tmp_path / "work", web.load_examples(tiny_root), torch.bfloat16,
                        max_upload_mb=0.5, max_frames=8)


@pytest.fixture
def client(jobs: web.JobQueue) -> Iterator[TestClient]:
    with TestClient(web.create_app(jobs, "video.pth.tar")) as client:
        yield client


def post(client: TestClient, sentences: str = SENTENCES, clip: Path | None = None, name: str | None = None,
         data: bytes | None = None, **fields: str) -> dict:
    files = None
    if clip is not None or data is not None:
        files = {"clip": (name or clip.name, data if data is not None else clip.read_bytes(), "video/mp4")}
    response = client.post("/api/jobs", data={"sentences": sentences, **fields}, files=files)
    return {"status": response.status_code, **response.json()}


def wait(client: TestClient, job: dict, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while job.get("state") in ("queued", "running"):
        assert time.monotonic() < deadline, f"job still {job['state']} after {timeout} s"
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def probe(data: bytes, path: Path) -> tuple[str, str, int, tuple[int, int]]:
    path.write_bytes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, stream.codec_context.pix_fmt, count, (stream.width, stream.height)


def test_the_page_and_its_script_are_served_with_nothing_from_other_sites(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/page.js">' in page.text
    for route in ("/", "/page.js", "/page.css"):
        text = client.get(route).text
        assert "https://" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")


def test_a_clip_and_two_sentences_give_an_h264_video_rows_and_json_lines(client: TestClient, clip: Path,
                                                                         tmp_path: Path) -> None:
    job = wait(client, post(client, clip=clip))
    assert job["state"] == "done", job
    result = job["result"]
    assert result["sentences"] == SENTENCES.splitlines() and result["frames"] == 5 and result["fps"] == 10.0
    assert [(r["frame"], r["sentence"]) for r in result["rows"]] == [(t, s) for t in range(5) for s in (0, 1)]
    assert [r["time"] for r in result["rows"][::2]] == [0.0, 0.1, 0.2, 0.3, 0.4]
    video = client.get(result["video"])
    assert video.headers["content-type"] == "video/mp4"
    assert probe(video.content, tmp_path / "annotated.mp4") == ("h264", "yuv420p", 5, probe(clip.read_bytes(),
                                                                                             tmp_path / "in.mp4")[3])
    lines = [json.loads(line) for line in client.get(result["jsonl"]).text.splitlines()]
    assert [(r["frame"], r["sentence"]) for r in lines] == [(t, s) for t in range(5) for s in SENTENCES.splitlines()]
    assert [r["box"] for r in lines] == [r["box"] for r in result["rows"]]
    assert all(len(r["candidates"]) == 5 for r in lines)


def test_an_example_is_chosen_by_its_number_and_rendered_on_demand(client: TestClient, jobs: web.JobQueue,
                                                                   tiny_root: Path) -> None:
    examples = client.get("/api/config").json()["examples"]
    assert [e["index"] for e in examples] == list(range(len(web.test_clips(tiny_root))))
    assert client.get("/api/examples/0/thumbnail.jpg").headers["content-type"] == "image/jpeg"
    job = wait(client, post(client, sentences=examples[0]["sentences"][0], example="0"))
    assert job["state"] == "done", job
    assert job["result"]["frames"] == len(jobs.examples[0].frames)
    assert jobs.examples[0].video == jobs.work / "examples" / "0.mp4"


def test_unknown_words_are_warned_about_before_and_after_submitting(client: TestClient, clip: Path) -> None:
    warned = client.post("/api/check", json={"sentences": "the red zorblax circle\nthe blue square"}).json()
    assert warned == {"warnings": ["In 'the red zorblax circle', 'zorblax' is not in the model's vocabulary "
                                   "(read as an unknown word)."], "error": None}
    job = post(client, sentences="the red zorblax circle", clip=clip)
    assert job["warnings"] == warned["warnings"]
    assert wait(client, job)["state"] == "done"


def test_a_sentence_without_a_known_word_is_refused_in_one_sentence(client: TestClient, clip: Path) -> None:
    job = post(client, sentences="zorblax quux", clip=clip)
    assert job["status"] == 400
    assert job["error"].startswith("Sentence 'zorblax quux': none of its words is in the model's vocabulary")


def garbage_mp4(clip: Path) -> bytes:
    """The clip with its coded frames zeroed: the container opens, no frame decodes."""
    data = bytearray(clip.read_bytes())
    start = data.find(b"mdat") + 4
    data[start:start + (len(data) - start) // 2] = bytes((len(data) - start) // 2)
    return bytes(data)


@pytest.mark.parametrize(("case", "message"), [
    ("no sentence", web.NO_SENTENCE),
    ("no clip", web.NO_CLIP),
    ("empty clip", web.EMPTY_CLIP),
    ("wrong suffix", web.NOT_A_VIDEO),
    ("oversized upload", "The clip is larger than 0.5 MB, the most this server accepts (--max_upload_mb)."),
    ("text file", web.NOT_A_VIDEO),
    ("undecodable video", web.UNDECODABLE),
    ("too many frames", "The clip has more than 3 frames, the most this server grounds (--max_frames)."),
    ("stride", "The stride must be a whole number from 1 to 100."),
    ("example number", "The example must be a whole number from 0 to 1."),
])
def test_bad_input_is_one_sentence_and_the_server_keeps_serving(case: str, message: str, client: TestClient,
                                                                 jobs: web.JobQueue, clip: Path) -> None:
    requests = {
        "no sentence": lambda: post(client, sentences=" \n ", clip=clip),
        "no clip": lambda: post(client),
        "empty clip": lambda: post(client, clip=clip, data=b""),
        "wrong suffix": lambda: post(client, clip=clip, name="clip.exe"),
        "oversized upload": lambda: post(client, clip=clip, data=bytes(600 * 1024)),
        "text file": lambda: post(client, clip=clip, data=b"not a video at all\n" * 20),
        "undecodable video": lambda: post(client, clip=clip, data=garbage_mp4(clip)),
        "too many frames": lambda: post(client, clip=clip),
        "stride": lambda: post(client, clip=clip, stride="0"),
        "example number": lambda: post(client, example="../../etc/passwd"),
    }
    if case == "too many frames":
        jobs.max_frames = 3
    job = requests[case]()
    answer = job["error"] if "error" in job else wait(client, job)["message"]
    assert answer == message
    assert "Traceback" not in answer and str(jobs.work) not in answer
    jobs.max_frames = 8
    assert wait(client, post(client, clip=clip))["state"] == "done"


def test_a_failure_inside_grounding_reaches_the_page_as_one_sentence(client: TestClient, clip: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(web, "ground_and_draw", broken)
    job = wait(client, post(client, clip=clip))
    assert (job["state"], job["message"]) == ("error", web.SERVER_FAILED)


def test_job_ids_are_looked_up_never_used_as_paths(client: TestClient) -> None:
    for job_id in ("0123456789abcdef", "..%2F..%2Fetc%2Fpasswd", "%2E%2E"):
        answer = client.get(f"/api/jobs/{job_id}/video")
        assert answer.status_code == 404 and answer.json()["error"] in (web.UNKNOWN_JOB,
                                                                         "There is nothing at this address.")
    assert client.get("/api/examples/7/thumbnail.jpg").json() == {"error": "There is no example 7."}


def test_jobs_wait_in_a_queue_and_run_one_at_a_time(client: TestClient, jobs: web.JobQueue, clip: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    running, most = [0], [0]
    ground = web.ground_and_draw
    go = threading.Event()  # the first job waits until all four are submitted

    def counted(*args: object, **kwargs: object) -> Iterator:
        go.wait(timeout=60)
        running[0] += 1
        most[0] = max(most[0], running[0])
        yield from ground(*args, **kwargs)
        running[0] -= 1

    monkeypatch.setattr(web, "ground_and_draw", counted)
    jobs.max_queue = 3
    submitted = [post(client, clip=clip) for _ in range(4)]
    go.set()
    assert [job["state"] for job in submitted[1:3]] == ["queued", "queued"]
    assert submitted[3] == {"status": 503, "error": "The server is busy (3 jobs waiting): try again in a minute."}
    assert [wait(client, job)["state"] for job in submitted[:3]] == ["done"] * 3
    assert most[0] == 1
    assert len(list((jobs.work / "jobs").iterdir())) == 3  # the refused upload was removed


def test_finished_jobs_expire_with_their_files_and_exit_removes_everything(jobs: web.JobQueue, clip: Path) -> None:
    with TestClient(web.create_app(jobs, "video.pth.tar")) as client:
        job = wait(client, post(client, clip=clip))
        folder = jobs.work / "jobs" / job["id"]
        assert (folder / "annotated.mp4").is_file() and (folder / "boxes.jsonl").is_file()
        jobs.keep_s = 0.0
        assert client.get(f"/api/jobs/{job['id']}").json() == {"error": web.UNKNOWN_JOB}
        assert not folder.exists()
    assert not jobs.work.exists()


def test_without_a_checkpoint_web_demo_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_main(web_demo.main, web_demo.get_args_parser(), []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run `python run_demo.py` to train one, or pass --resume" in err


def test_the_server_binds_this_machine_only_by_default() -> None:
    args = web_demo.get_args_parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8000)


def test_a_missing_optional_requirement_skips_loudly_here_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.warns(UserWarning, match="SKIPPED: no_such_module is not installed"), \
            pytest.raises(pytest.skip.Exception, match="SKIPPED LOUDLY"):
        require("no_such_module", "an example")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no_such_module is not installed"):
        require("no_such_module", "an example")
