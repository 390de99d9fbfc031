"""The web page behind ``web_demo.py``: upload a clip (or pick an example), type sentences, get the boxed video.

A FastAPI app serves one static page (``web/``) and a small JSON API. Jobs run one at a time on a single worker
thread (:class:`JobQueue`); the page polls a job by its server-made id. Grounding is :class:`app.grounder.Grounder`
through :func:`app.annotate.ground_and_draw`, the video is :class:`utils.video.VideoWriter`: no grounding here.

Safety: nothing from a request names a file (job ids are made here and looked up in a dict, example clips are
chosen by their number in a list made at start); uploads are bounded (``max_upload_mb``, ``max_frames``) and live
in one temporary folder, removed per job when it expires and entirely at exit. Every refusal is one sentence
(:class:`WebError`); anything unexpected is logged here and reaches the page as one sentence too.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import queue
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from app.annotate import ground_and_draw, json_record, test_clips
from app.grounder import Grounder, SourceFrame, read_frames
from app.predictions import SENTENCE_COLOURS
from utils.io import UserInputError, atomic_write_text
from utils.video import VideoWriter, write_video

log = logging.getLogger(__name__)
PAGE = Path(__file__).resolve().parent.parent / "web"
PAGE_FILES = {"/": ("index.html", "text/html"), "/page.js": ("page.js", "text/javascript"),
              "/page.css": ("page.css", "text/css")}
UPLOAD_SUFFIXES = (".mp4", ".mov", ".webm", ".avi")
EXAMPLE_FPS = 10.0
FORM_SLACK = 64 * 1024  # bytes of a multipart request beyond the clip itself (fields, boundaries)
MEDIA_TYPES = {".mp4": "video/mp4", ".webm": "video/webm"}

NO_SENTENCE = "Type at least one sentence to ground, one per line."
NO_CLIP = "Choose a clip to upload or one of the examples."
EMPTY_CLIP = "The clip is empty (0 bytes)."
NOT_A_VIDEO = "The file is not a video this server can open (it accepts mp4, mov, webm and avi clips)."
UNDECODABLE = "The video could not be decoded: none of its frames could be read."
UNKNOWN_JOB = "There is no such job (finished jobs expire after a while): submit the clip again."
SERVER_FAILED = "The server failed on this request; its log has the details."


class WebError(Exception):
    """A refusal the page shows as it is: one sentence, with the HTTP status to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Options:
    """What the page lets a user choose, as ``ground.py`` has it."""

    stride: int = 1
    post_process: bool = False
    amp: bool = False


@dataclass
class Example:
    """A test clip of the demo's synthetic set: its frames, its sentences, and its MP4 once rendered."""

    name: str
    frames: list[Path]
    sentences: list[str]
    video: Path | None = None


@dataclass
class Job:
    id: str
    folder: Path
    clip: Path
    sentences: list[str]
    options: Options
    warnings: list[str]
    state: str = "queued"  # queued, running, done, error
    done: int = 0  # grounded frames
    total: int | None = None  # frames to ground, from the clip's header (an estimate)
    message: str | None = None
    result: dict[str, Any] | None = None
    video: Path | None = None
    jsonl: Path | None = None
    submitted: float = field(default_factory=time.monotonic)
    finished: float | None = None


class JobQueue:
    """Jobs, their folders under ``work``, and the one worker thread that grounds them in order."""

    def __init__(self, grounder: Grounder, work: Path, examples: list[Example], amp_dtype: torch.dtype | None,
                 max_upload_mb: float, max_frames: int, max_queue: int = 8, keep_s: float = 1800.0) -> None:
        self.grounder = grounder
        self.work = work
        self.examples = examples
        self.amp_dtype = amp_dtype
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_upload_mb = max_upload_mb
        self.max_frames = max_frames
        self.max_queue = max_queue
        self.keep_s = keep_s
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.pending: queue.Queue[Job | None] = queue.Queue()
        self.worker = threading.Thread(target=self._run, name="grounding-worker", daemon=True)
        self.stopping = threading.Event()

    # ----- submitting and reading jobs (request threads)

    def check_sentences(self, text: str) -> tuple[list[str], list[str]]:
        """The sentences of ``text`` (one per non-blank line) and a warning per sentence with unknown words; a
        sentence with no known word is refused."""
        sentences = [line.strip() for line in text.splitlines() if line.strip()]
        if not sentences:
            raise WebError(NO_SENTENCE)
        warnings = []
        for sentence in sentences:
            try:
                self.grounder.encode(sentence)
            except UserInputError as err:
                raise WebError(str(err)[0].upper() + str(err)[1:] + ".") from None
            unknown = self.grounder.unknown_words(sentence)
            if unknown:
                words = ", ".join(f"'{w}'" for w in unknown)
                warnings.append(f"In '{sentence}', {words} {'is' if len(unknown) == 1 else 'are'} not in the "
                                f"model's vocabulary (read as an unknown word).")
        return sentences, warnings

    def new_folder(self) -> tuple[str, Path]:
        job_id = secrets.token_hex(8)
        folder = self.work / "jobs" / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def submit(self, job_id: str, folder: Path, clip: Path, sentences: list[str], warnings: list[str],
               options: Options) -> Job:
        self.expire()
        with self.lock:
            waiting = sum(job.state in ("queued", "running") for job in self.jobs.values())
            if waiting >= self.max_queue:
                raise WebError(f"The server is busy ({waiting} jobs waiting): try again in a minute.", 503)
            job = Job(job_id, folder, clip, sentences, options, warnings)
            self.jobs[job_id] = job
        self.pending.put(job)
        return job

    def job(self, job_id: str) -> Job:
        self.expire()
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise WebError(UNKNOWN_JOB, 404)
        return job

    def status(self, job: Job) -> dict[str, Any]:
        with self.lock:
            ahead = sum(other.state in ("queued", "running") and other.submitted < job.submitted
                        for other in self.jobs.values())
            out = {"id": job.id, "state": job.state, "done": job.done, "total": job.total, "warnings": job.warnings}
            if job.state == "queued":
                out["ahead"] = ahead
            if job.state == "error":
                out["message"] = job.message
            if job.state == "done":
                out["result"] = job.result
        return out

    def example_video(self, index: int) -> Path:
        """The MP4 of example ``index``, rendered on first use."""
        if not 0 <= index < len(self.examples):
            raise WebError(f"There is no example {index}.", 404)
        example = self.examples[index]
        with self.lock:
            if example.video is None:
                frames = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in example.frames]
                if any(frame is None for frame in frames):
                    raise WebError(f"Example {index} cannot be read on the server (its frames are missing).", 500)
                example.video = write_video(self.work / "examples" / f"{index}.mp4", frames, EXAMPLE_FPS)
            return example.video

    def expire(self) -> None:
        """Forget finished jobs older than ``keep_s`` and remove their folders."""
        now = time.monotonic()
        with self.lock:
            old = [job for job in self.jobs.values() if job.finished is not None and now - job.finished > self.keep_s]
            for job in old:
                del self.jobs[job.id]
        for job in old:
            shutil.rmtree(job.folder, ignore_errors=True)

    # ----- the worker

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        """Finish the running job's frame, stop, and remove every upload and output."""
        self.stopping.set()
        self.pending.put(None)
        if self.worker.is_alive():
            self.worker.join(timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)

    def _run(self) -> None:
        while (job := self.pending.get()) is not None:
            with self.lock:
                job.state = "running"
            try:
                result = self._ground(job)
            except WebError as err:
                self._finish(job, "error", message=str(err))
            except UserInputError as err:  # one of the Grounder's refusals: names no server file
                self._finish(job, "error", message=str(err))
            except Exception:  # noqa: BLE001 (the worker must outlive any job; the log keeps the traceback)
                log.exception("job %s failed", job.id)
                self._finish(job, "error", message=SERVER_FAILED)
            else:
                self._finish(job, "done", result=result)

    def _finish(self, job: Job, state: str, message: str | None = None, result: dict | None = None) -> None:
        with self.lock:
            job.state, job.message, job.result, job.finished = state, message, result, time.monotonic()

    def _frames(self, frames: Iterable[SourceFrame]) -> Iterator[SourceFrame]:
        """``frames``, refusing a clip longer than ``max_frames`` and one that decodes to nothing."""
        try:
            for count, frame in enumerate(frames, 1):
                if self.stopping.is_set():
                    raise WebError("The server is shutting down.", 503)
                if count > self.max_frames:
                    raise WebError(too_many_frames(self.max_frames))
                yield frame
        except UserInputError:
            raise WebError(UNDECODABLE) from None

    def _ground(self, job: Job) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            source = read_frames([job.clip])
        except UserInputError:
            raise WebError(NOT_A_VIDEO) from None
        if source.kind != "video":
            raise WebError(NOT_A_VIDEO)
        if source.frame_count is not None and source.frame_count > self.max_frames:
            raise WebError(too_many_frames(self.max_frames))
        fps = source.fps or EXAMPLE_FPS
        options = job.options
        with self.lock:
            job.total = None if source.frame_count is None else math.ceil(source.frame_count / options.stride)
        grounder = copy.copy(self.grounder)  # the model is shared; only this job's autocast differs
        grounder.amp_dtype = self.amp_dtype if options.amp else None
        rows, lines = [], []
        with VideoWriter(job.folder / "annotated.mp4", fps) as video:
            for predictions in ground_and_draw(grounder, self._frames(source), job.sentences, video.write,
                                           stride=options.stride, post_process=options.post_process):
                for prediction in predictions:
                    line = json_record(prediction, source, fps)
                    lines.append(json.dumps(line, allow_nan=False))
                    rows.append({"frame": line["frame"], "time": line["time"], "sentence": prediction.sentence,
                                 "box": line["box"], "score": round(line["score"], 4)})
                with self.lock:
                    job.done += 1
        if video.frames == 0:
            raise WebError(UNDECODABLE)
        jsonl = atomic_write_text("\n".join(lines) + "\n", job.folder / "boxes.jsonl")
        with self.lock:
            job.video, job.jsonl = video.path, jsonl
        return {"sentences": job.sentences, "fps": fps, "frames": video.frames, "rows": rows,
                "video": f"/api/jobs/{job.id}/video", "jsonl": f"/api/jobs/{job.id}/boxes.jsonl",
                "seconds": round(time.perf_counter() - start, 2)}


def too_many_frames(limit: int) -> str:
    return f"The clip has more than {limit} frames, the most this server grounds (--max_frames)."


def load_examples(data: Path | None, count: int = 4) -> list[Example]:
    """The first ``count`` test clips of the demo's synthetic set at ``data`` (none where it is missing)."""
    if data is None or not data.is_dir():
        return []
    try:
        clips = test_clips(data)[:count]
    except UserInputError as err:
        log.warning("no example clips: %s", err)
        return []
    return [Example(frames[0].parent.name, frames, sentences) for frames, sentences in clips]


def create_app(jobs: JobQueue, model_name: str) -> FastAPI:
    """The page and its API over ``jobs`` (started and stopped with the app)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        jobs.start()
        try:
            yield
        finally:
            jobs.stop()

    app = FastAPI(title="CG-SL-Att web demo", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(WebError)
    async def refused(_: Request, err: WebError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "The request is malformed (a field has the wrong type)."}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": "There is nothing at this address." if err.status_code == 404 else
                             "This request is not allowed here."}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=err)
        return JSONResponse({"error": SERVER_FAILED}, status_code=500)

    def page_file(route: str) -> None:
        name, media_type = PAGE_FILES[route]

        async def serve() -> FileResponse:
            return FileResponse(PAGE / name, media_type=media_type, headers={"Cache-Control": "no-cache"})

        app.add_api_route(route, serve, methods=["GET"], include_in_schema=False)

    for route in PAGE_FILES:
        page_file(route)

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        grounder = jobs.grounder
        return {"model": model_name, "kind": grounder.kind, "words": len(grounder.corpus),
                "device": str(grounder.device), "max_upload_mb": jobs.max_upload_mb, "max_frames": jobs.max_frames,
                "amp": None if jobs.amp_dtype is None else str(jobs.amp_dtype).removeprefix("torch."),
                "post_process": grounder.kind == "video", "suffixes": list(UPLOAD_SUFFIXES),
                "colours": ["#{:02x}{:02x}{:02x}".format(*reversed(c)) for c in SENTENCE_COLOURS],
                "examples": [{"index": i, "name": e.name, "sentences": e.sentences}
                             for i, e in enumerate(jobs.examples)]}

    @app.get("/api/examples/{index}/thumbnail.jpg")
    async def thumbnail(index: int) -> Response:
        if not 0 <= index < len(jobs.examples):
            raise WebError(f"There is no example {index}.", 404)
        image = cv2.imread(str(jobs.examples[index].frames[0]), cv2.IMREAD_COLOR)
        if image is None:
            raise WebError(f"Example {index} cannot be read on the server (its frames are missing).", 500)
        return Response(cv2.imencode(".jpg", image)[1].tobytes(), media_type="image/jpeg")

    @app.post("/api/check")
    async def check(request: Request) -> dict[str, Any]:
        """Warnings for the sentences typed so far (unknown words), before anything is submitted."""
        body = await request.json()
        text = body.get("sentences", "") if isinstance(body, dict) else ""
        try:
            _, warnings = jobs.check_sentences(text if isinstance(text, str) else "")
        except WebError as err:
            return {"warnings": [], "error": None if str(err) == NO_SENTENCE else str(err)}
        return {"warnings": warnings, "error": None}

    @app.post("/api/jobs")
    async def submit(request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise WebError("The upload must state its size (a Content-Length header).", 411)
        if int(length) > jobs.max_upload_bytes + FORM_SLACK:
            raise WebError(too_large(jobs.max_upload_mb), 413)
        async with request.form(max_files=1, max_fields=8) as form:
            sentences, warnings = jobs.check_sentences(str(form.get("sentences", "")))
            options = Options(stride=form_int(form.get("stride", "1"), "stride", 1, 100),
                              post_process=form.get("post_process") == "on", amp=form.get("amp") == "on")
            if options.post_process and jobs.grounder.kind != "video":
                raise WebError("Post-processing needs a video (CG-SL-Att) model; this server runs an image model.")
            if options.amp and jobs.amp_dtype is None:
                raise WebError("Mixed precision is not available on this server.")
            upload, example = form.get("clip"), form.get("example")
            if upload is not None and not isinstance(upload, str) and upload.filename:
                suffix = Path(upload.filename).suffix.lower()
                if suffix not in UPLOAD_SUFFIXES:
                    raise WebError(NOT_A_VIDEO)
                job_id, folder = jobs.new_folder()
                clip = folder / f"upload{suffix}"  # the name is ours; only the suffix, from a fixed list, is theirs
                try:
                    size = await save_upload(upload, clip, jobs.max_upload_bytes)
                except WebError:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                if size == 0:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise WebError(EMPTY_CLIP)
            elif example:
                clip = jobs.example_video(form_int(example, "example", 0, len(jobs.examples) - 1))
                job_id, folder = jobs.new_folder()
            else:
                raise WebError(NO_CLIP)
        try:
            job = jobs.submit(job_id, folder, clip, sentences, warnings, options)
        except WebError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return jobs.status(job)

    @app.get("/api/jobs/{job_id}")
    async def status(job_id: str) -> dict[str, Any]:
        return jobs.status(jobs.job(job_id))

    @app.get("/api/jobs/{job_id}/video")
    async def video(job_id: str) -> FileResponse:
        job = jobs.job(job_id)
        if job.video is None:
            raise WebError("The annotated video is not ready yet.", 409)
        return FileResponse(job.video, media_type=MEDIA_TYPES.get(job.video.suffix, "application/octet-stream"))

    @app.get("/api/jobs/{job_id}/boxes.jsonl")
    async def boxes(job_id: str) -> FileResponse:
        job = jobs.job(job_id)
        if job.jsonl is None:
            raise WebError("The boxes are not ready yet.", 409)
        return FileResponse(job.jsonl, media_type="application/jsonl", filename="boxes.jsonl")

    return app


def too_large(limit_mb: float) -> str:
    return f"The clip is larger than {limit_mb:g} MB, the most this server accepts (--max_upload_mb)."


def form_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit() and low <= int(value) <= high:
        return int(value)
    raise WebError(f"The {name} must be a whole number from {low} to {high}.")


async def save_upload(upload: Any, path: Path, limit: int) -> int:
    """Copy an uploaded file to ``path`` in chunks, refusing more than ``limit`` bytes; returns its size."""
    size = 0
    with open(path, "wb") as out:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise WebError(too_large(limit / 1024 / 1024), 413)
            out.write(chunk)
    return size
