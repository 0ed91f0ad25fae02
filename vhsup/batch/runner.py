"""Run a library batch: plan against the manifest, execute jobs in isolated workers, record results.

The parent process discovers inputs, decides per input whether to skip or
(re)do it, hands jobs to workers and is the only writer of the manifest.
Each job runs ``vhsup.pipeline.upscale_video`` in a worker process - a local
process of our own (``engine='local'``) or a Ray task (``engine='ray'``) -
so a file that crashes FFmpeg or exhausts memory fails alone.

Local workers are the long-lived spawned processes of
:class:`vhsup.workers.Pool` (one model load per job, but one interpreter and
torch import per worker; one GPU each where there are several): a worker
that dies is replaced and its job marked failed with the cause, and workers
die with the parent, removing their partial output on the way, so a
SIGKILLed batch leaves no orphan writing files.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vhsup import signals
from vhsup.batch.discover import Found, discover, output_paths
from vhsup.batch.manifest import Job, Manifest, fingerprint, run_lock, settings_hash
from vhsup.errors import VhsupError
from vhsup.options import BATCH, Options, declared, output_settings
from vhsup.workers import Event, Pool, Report, death_reason, throttled, visible_gpus

# Options of vhsup.options.Options a batch passes through to every job (those `vhsup batch` offers).
UPSCALE_OPTIONS = tuple(d.name for d in declared(BATCH))
EXTENSIONS = ("mkv", "mp4", "mov")

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 3, 130


@dataclass
class BatchConfig:
    """Everything ``vhsup batch SRC --out OUT`` is told.

    Attributes:
        options: upscale options (names from :data:`UPSCALE_OPTIONS`).
        jobs: local worker processes; None = one per visible GPU, else 1.
        retries: a failed job is tried again on later runs until it has
            failed ``retries + 1`` times with the same input and settings.
        chunk_minutes: hook for chunked upscaling of long inputs (handed to
            each job; see :func:`upscale_one`).
        gpus_per_task: Ray ``num_gpus`` per job; None = 1 when the cluster
            has GPUs (and the device is not cpu), else 0.
        overwrite: replace output files the manifest does not know about.
    """

    src: Path
    out: Path
    options: dict = field(default_factory=dict)
    ext: str = "mkv"
    jobs: int | None = None
    retries: int = 2
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    engine: str = "local"
    address: str | None = None
    gpus_per_task: float | None = None
    cpus_per_task: float = 1.0
    chunk_minutes: float | None = None
    overwrite: bool = False


@dataclass
class JobSpec:
    """What a worker needs for one job (picklable; crosses process boundaries)."""

    key: str
    source: str
    output: str
    options: dict
    overwrite: bool
    torch_threads: int | None = None
    chunk_minutes: float | None = None


@dataclass
class JobReport:
    """One input's line in the summary."""

    input: str  # relative to the source folder: the job's name, as in ``batch status``
    output: str  # absolute
    state: str  # done | failed | interrupted | pending
    action: str  # ran | skipped | not-run
    why: str = ""  # why it ran (new, input changed, settings changed, retry, ...) or was skipped
    error: str | None = None
    seconds: float | None = None
    frames: int | None = None
    fps: float | None = None
    attempts: int = 0
    source: str = ""  # the input's absolute path

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Summary:
    src: str
    out: str
    engine: str
    workers: int
    jobs: list[JobReport]
    seconds: float
    interrupted: bool = False
    stop_signal: int | None = None  # SIGTERM or SIGHUP when one stopped the run, else Ctrl-C

    @property
    def exit_status(self) -> int:
        if self.interrupted:
            return 128 + self.stop_signal if self.stop_signal else EXIT_INTERRUPTED
        return EXIT_FAILED if any(j.state != "done" for j in self.jobs) else EXIT_OK

    def counts(self) -> dict[str, int]:
        c = {"total": len(self.jobs), "done": 0, "failed": 0, "interrupted": 0, "pending": 0, "ran": 0, "skipped": 0}
        for j in self.jobs:
            c[j.state] = c.get(j.state, 0) + 1
            if j.action in ("ran", "skipped"):
                c[j.action] += 1
        return c

    def to_json(self) -> dict:
        return {
            "src": self.src,
            "out": self.out,
            "engine": self.engine,
            "workers": self.workers,
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "exit_status": self.exit_status,
            "jobs": [j.to_json() for j in self.jobs],
        }


class Reporter:
    """Hooks for a front end; the CLI draws progress with them. All are called in the parent."""

    def planned(self, total: int, to_run: int) -> None: ...
    def started(self, key: str, worker: str) -> None: ...
    def progress(self, key: str, done: int, total: int) -> None: ...
    def finished(self, report: JobReport) -> None: ...
    def notice(self, message: str) -> None: ...


# --- the job itself (runs in a worker) ----------------------------------------


def upscale_one(spec: JobSpec, progress: Callable[[int, int], None] | None, notice: Callable[[str], None] | None):
    """The one place a job turns into an upscale.

    With ``chunk_minutes`` set the job goes to ``vhsup.chunked.upscale_chunked``
    instead: cut at keyframes into chunks of about that length, which resume
    one by one after an interruption. One chunk process per job: the batch
    already runs ``--jobs`` files side by side.
    """
    if spec.chunk_minutes:
        try:
            from vhsup.chunked import upscale_chunked
        except ImportError:
            raise VhsupError("chunked upscaling (--chunk-minutes) is not available in this vhsup") from None
        return upscale_chunked(
            spec.source,
            spec.output,
            workers=1,
            chunk_seconds=spec.chunk_minutes * 60,
            progress=progress,
            notice=notice,
            overwrite=spec.overwrite,
            **spec.options,
        )
    from vhsup.pipeline import upscale_video

    return upscale_video(
        spec.source, spec.output, progress=progress, notice=notice, overwrite=spec.overwrite, **spec.options
    )


def _one_line(exc: BaseException, source: str) -> str:
    if isinstance(exc, VhsupError):
        # The input's own name is the job's name already; keep other paths (the output, a model file).
        if exc.path and os.path.abspath(exc.path) == os.path.abspath(source):
            return exc.reason
        return str(exc)
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]


def execute(spec: JobSpec, progress: Callable[[int, int], None] | None = None) -> dict:
    """Run one job and describe the outcome; never raises for a bad file."""
    from vhsup.errors import Interrupted

    t0 = time.time()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    base = {"worker": worker, "pid": os.getpid(), "started": t0}
    notices: list[str] = []
    try:
        if spec.torch_threads:
            import torch

            torch.set_num_threads(spec.torch_threads)
        Path(spec.output).parent.mkdir(parents=True, exist_ok=True)
        result = upscale_one(spec, progress, notices.append)
    except (Interrupted, KeyboardInterrupt):
        return {**base, "state": "interrupted", "error": "interrupted", "seconds": time.time() - t0}
    except Exception as exc:  # noqa: BLE001 - isolation: any failure is this job's, reported in one line
        return {**base, "state": "failed", "error": _one_line(exc, spec.source), "seconds": time.time() - t0}
    seconds = time.time() - t0
    return {
        **base,
        "state": "done",
        "error": None,
        "seconds": seconds,
        "frames": result.frames_out,
        "fps": round(result.frames_out / seconds, 3) if seconds > 0 else None,
        "notices": notices,
    }


def _local_job(spec: JobSpec, report: Report) -> dict:
    """A job in a local worker; progress goes to the parent as (done, total)."""
    return execute(spec, throttled(lambda done, total: report((done, total)), 0.25))


# --- planning -----------------------------------------------------------------


def resolve_settings(config: BatchConfig) -> tuple[str, dict]:
    """The concrete model name and the settings that decide an output's look (``output_settings``'s rule)."""
    fields = Options.__dataclass_fields__
    # Through Options, so that an option left out and one given at its default hash the same.
    opts = Options.from_kwargs(**{k: v for k, v in config.options.items() if k in fields and v is not None})
    settings = output_settings(opts)
    settings["ext"] = config.ext.lstrip(".").lower()
    return settings["model"], settings


@dataclass
class _Planned:
    job: Job
    dst: Path  # the output, absolute
    action: str  # run | skip
    why: str
    overwrite: bool


def plan_jobs(
    manifest: Manifest,
    found: Sequence[Found],
    out: Path,
    outputs: dict[str, Path],
    settings: str,
    model: str,
    retries: int,
    overwrite: bool,
) -> list[_Planned]:
    """Decide, per input, whether to skip it or (re)do it, and record new or reset rows.

    Outputs are stored relative to ``out`` so that a library moved as a whole
    (``mv tapes-hd /mnt/nas/``) keeps its finished jobs.
    """
    from vhsup.media.encode import stale_temp_files

    planned = []
    for f in found:
        try:
            fp = fingerprint(f.path, f.size)
        except OSError:
            fp = "unreadable"  # the job runs and fails with the reader's own reason
        dst = outputs[f.rel]
        row = manifest.job(f.rel)
        fresh = Job(
            input=f.rel,
            source=str(f.path),
            size=f.size,
            mtime_ns=f.mtime_ns,
            fingerprint=fp,
            settings=settings,
            model=model,
            output=dst.relative_to(out).as_posix(),
            state="pending",
        )
        # An existing output may be replaced only if this batch wrote it (or was writing it when it
        # was stopped); a file someone else put there needs --overwrite.
        ours = (
            row is not None
            and row.output == fresh.output
            and (bool(row.written) or row.state in ("running", "interrupted"))
        )
        if row is None:
            action, why = "run", "new"
        elif (row.size, row.mtime_ns, row.fingerprint) != (f.size, f.mtime_ns, fp):
            action, why = "run", "input changed"
        elif row.settings != settings:
            action, why = "run", "settings changed"
        elif row.state == "done":
            if (out / row.output).is_file():
                action, why = "skip", "done"
            else:
                action, why = "run", "output missing"
        elif row.state == "failed":
            if row.attempts <= retries:
                action, why = "run", f"retry {row.attempts}/{retries}"
            else:
                action, why = "skip", f"failed {row.attempts} times (--retries {retries})"
        else:
            action, why = "run", row.state  # pending or interrupted
        fresh.written = int(ours)
        if action == "run":
            keep_attempts = why.startswith("retry") or why in ("pending", "interrupted")
            fresh.attempts = row.attempts if (row is not None and keep_attempts) else 0
            fresh.error = row.error if (row is not None and keep_attempts) else None
            manifest.upsert(fresh)
            for stale in stale_temp_files(dst):
                stale.unlink(missing_ok=True)
            planned.append(_Planned(fresh, dst, "run", why, overwrite or ours))
        else:
            assert row is not None  # a skip comes only from an existing row
            if row.source != fresh.source:  # the library was moved: same file, new place
                manifest.update(f.rel, source=fresh.source)
            planned.append(_Planned(row, out / row.output, "skip", why, False))
    return planned


# --- engines ------------------------------------------------------------------


def _run_local(
    specs: list[JobSpec],
    manifest: Manifest,
    run_id: str,
    jobs: int,
    device: str,
    reporter: Reporter,
    record: Callable[[str, dict], None],
) -> bool:
    """Run specs over ``jobs`` local workers. Returns True if interrupted."""
    by_key = {s.key: s for s in specs}

    def handle(event: Event) -> None:
        key = str(event.key)
        if event.kind == "started":
            manifest.update(
                key,
                state="running",
                run_id=run_id,
                worker=event.worker,
                pid=event.pid,
                started=time.time(),
                finished=None,
                seconds=None,
                frames=None,
                fps=None,
            )
            reporter.started(key, event.worker)
        elif event.kind == "message":
            reporter.progress(key, *event.body)
        elif event.kind == "done":
            record(key, event.body)
        elif event.key is not None:  # the job raised, its worker died, or the pool stopped in the middle of it
            if event.kind == "interrupted":
                outcome = {"state": "interrupted", "error": "interrupted"}
            elif event.kind == "died":
                outcome = {"state": "failed", "error": death_reason(event.body)}
            else:
                outcome = {"state": "failed", "error": f"{event.body.kind}: {event.body.text}"}
            record(key, {**outcome, "worker": event.worker, "pid": event.pid})
            _remove_partials(by_key[key].output)

    pool = Pool(_local_job, jobs, device=device, name="vhsup-batch")
    try:
        for event in pool.run((s.key, s) for s in specs):
            handle(event)
        return False
    except KeyboardInterrupt:
        return True
    finally:
        for event in pool.stop():  # a job that finished as the interrupt came in is done, not interrupted
            handle(event)


def _remove_partials(output: str) -> None:
    from vhsup.media.encode import stale_temp_files

    for stale in stale_temp_files(Path(output)):
        stale.unlink(missing_ok=True)


def _ray_task(spec: JobSpec, events) -> dict:
    """A job as a Ray task; progress goes to the driver through a Ray queue."""

    def send(done: int, total: int) -> None:
        try:
            events.put_nowait(("progress", spec.key, done, total))
        except Exception:  # noqa: BLE001, S110 - progress is best effort
            pass

    progress = throttled(send, 0.5) if events is not None else None

    if events is not None:
        try:
            events.put_nowait(("start", spec.key, f"{socket.gethostname()}:{os.getpid()}"))
        except Exception:  # noqa: BLE001, S110 - progress is best effort
            pass
    return execute(spec, progress)


def _run_ray(
    specs: list[JobSpec],
    manifest: Manifest,
    run_id: str,
    config: BatchConfig,
    reporter: Reporter,
    record: Callable[[str, dict], None],
) -> bool:
    try:
        import ray
    except ImportError:
        raise VhsupError("--engine ray needs Ray: pip install 'vhsup[ray]' (or 'ray[default]')") from None
    if not ray.is_initialized():
        try:
            ray.init(address=config.address, log_to_driver=False, include_dashboard=False)
        except Exception as exc:  # noqa: BLE001 - a cluster that cannot be reached is the user's to fix
            raise VhsupError(
                f"cannot connect to the Ray cluster at {config.address or 'a new local instance'}: "
                f"{' '.join(str(exc).split())}"
            ) from None
    gpus = config.gpus_per_task
    if gpus is None:
        gpus = 1 if (config.options.get("device") != "cpu" and ray.cluster_resources().get("GPU", 0) > 0) else 0
    events = None
    try:
        from ray.util.queue import Queue

        events = Queue(actor_options={"num_cpus": 0})
    except Exception:  # noqa: BLE001 - no per-job progress, the rest works
        events = None
    task = ray.remote(_ray_task).options(num_gpus=gpus, num_cpus=config.cpus_per_task, max_retries=0)
    for s in specs:
        s.torch_threads = max(1, int(config.cpus_per_task))
    refs = {}
    for s in specs:
        refs[task.remote(s, events)] = s
        manifest.update(s.key, run_id=run_id, worker="ray (queued)")
    running: set[str] = set()

    def drain() -> None:
        if events is None:
            return
        try:
            items = events.get_nowait_batch(events.qsize())
        except Exception:  # noqa: BLE001
            return
        for item in items:
            if item[0] == "start" and item[1] not in running and any(s.key == item[1] for s in refs.values()):
                running.add(item[1])
                manifest.update(item[1], state="running", worker=item[2], started=time.time())
                reporter.started(item[1], item[2])
            elif item[0] == "progress":
                reporter.progress(item[1], item[2], item[3])

    try:
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            drain()
            for ref in done:
                spec = refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the task or its worker died: this job failed
                    outcome = {
                        "state": "failed",
                        "error": f"Ray task failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                    }
                running.discard(spec.key)
                record(spec.key, outcome)
        return False
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        time.sleep(1.0)
        for spec in refs.values():
            record(spec.key, {"state": "interrupted", "error": "interrupted"})
            _remove_partials(spec.output)
        return True
    finally:
        if events is not None:
            try:
                events.shutdown()
            except Exception:  # noqa: BLE001, S110 - the queue actor goes with the Ray session anyway
                pass


# --- the batch ----------------------------------------------------------------


def run_batch(config: BatchConfig, reporter: Reporter | None = None) -> Summary:
    """Discover, plan against the manifest, run what needs running, return the summary.

    Raises VhsupError for problems with the whole batch (missing source, a
    bad model name, another run holding the folder); a bad input is a failed
    job, never an exception.

    Local workers are started with multiprocessing's ``spawn``, which imports
    the caller's main module again in each worker: call this from a script
    under ``if __name__ == "__main__":`` (the ``vhsup`` command does).
    """
    reporter = reporter or Reporter()
    t0 = time.time()
    src, out = Path(config.src).expanduser(), Path(config.out).expanduser()
    if config.engine not in ("local", "ray"):
        raise VhsupError(f"--engine must be local or ray, not {config.engine!r}")
    ext = config.ext.lstrip(".").lower()
    if ext not in EXTENSIONS:
        raise VhsupError(f"--ext must be one of {', '.join(EXTENSIONS)}, not {config.ext!r}")
    if config.jobs is not None and config.jobs < 1:
        raise VhsupError("--jobs must be at least 1")
    if config.retries < 0:
        raise VhsupError("--retries must not be negative")
    if not src.exists():
        raise VhsupError("no such folder", src)
    if config.chunk_minutes is not None and config.chunk_minutes <= 0:
        raise VhsupError("--chunk-minutes must be positive")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VhsupError(f"cannot create the output folder ({exc.strerror or exc})", out) from None
    model, settings = resolve_settings(config)
    options = {k: v for k, v in config.options.items() if k in UPSCALE_OPTIONS}
    options["model"] = model
    device = str(options.get("device") or "auto")

    with signals.interrupts():  # SIGTERM and SIGHUP stop the run as Ctrl-C does: workers stopped, rows resumable
        return _run_locked(config, reporter, t0, src, out, ext, model, settings, options, device)


def _run_locked(
    config: BatchConfig,
    reporter: Reporter,
    t0: float,
    src: Path,
    out: Path,
    ext: str,
    model: str,
    settings: dict,
    options: dict,
    device: str,
) -> Summary:
    digest = settings_hash(settings)
    with run_lock(out):
        manifest = Manifest.open(out)
        run_id = manifest.begin_run(str(src.resolve()), config.engine, settings)
        interrupted = False
        jobs = 0
        reports: dict[str, JobReport] = {}
        try:
            # Rows a dead run left running: their partial files go now.
            root = out.resolve()
            for job in manifest.jobs():
                if job.state == "interrupted":
                    _remove_partials(str(root / job.output))
            found = discover(src, out=out, include=config.include, exclude=config.exclude)
            existing = {j.input: root / j.output for j in manifest.jobs() if j.output.endswith("." + ext)}
            outputs = output_paths(found, root, ext, keep=existing)
            planned = plan_jobs(manifest, found, root, outputs, digest, model, config.retries, config.overwrite)
            to_run = [p for p in planned if p.action == "run"]
            for p in planned:
                j = p.job
                reports[j.input] = JobReport(
                    j.input,
                    str(p.dst),
                    j.state,
                    "skipped" if p.action == "skip" else "not-run",
                    p.why,
                    j.error if j.state == "failed" else None,
                    round(j.seconds, 3) if j.seconds is not None else None,
                    j.frames,
                    j.fps,
                    j.attempts,
                    j.source,
                )
            gpus = visible_gpus(device) if config.engine == "local" else []
            jobs = config.jobs or max(1, len(gpus))
            reporter.planned(len(planned), len(to_run))
            specs = [
                JobSpec(p.job.input, p.job.source, str(p.dst), options, p.overwrite, chunk_minutes=config.chunk_minutes)
                for p in to_run
            ]

            def record(key: str, outcome: dict) -> None:
                state = outcome.get("state", "failed")
                row = manifest.job(key)
                attempts = (row.attempts if row else 0) + (1 if state in ("done", "failed") else 0)
                fields = {
                    "state": state,
                    "error": outcome.get("error"),
                    "attempts": attempts,
                    "finished": time.time(),
                    "written": 1 if state == "done" else (row.written if row else 0),
                    "seconds": outcome.get("seconds"),
                    "frames": outcome.get("frames"),
                    "fps": outcome.get("fps"),
                }
                for k in ("worker", "pid", "started"):
                    if outcome.get(k) is not None:
                        fields[k] = outcome[k]
                manifest.update(key, **fields)
                rep = reports[key]
                rep.state, rep.action, rep.error, rep.attempts = state, "ran", fields["error"], attempts
                rep.seconds = round(fields["seconds"], 3) if fields["seconds"] is not None else None
                rep.frames, rep.fps = fields["frames"], fields["fps"]
                if state != "failed":
                    rep.error = None if state == "done" else rep.error
                reporter.finished(rep)
                for note in outcome.get("notices") or ():
                    reporter.notice(f"{key}: {note}")

            if specs and config.engine == "local":
                interrupted = _run_local(specs, manifest, run_id, jobs, device, reporter, record)
            elif specs:
                jobs = len(specs)  # Ray decides the concurrency
                interrupted = _run_ray(specs, manifest, run_id, config, reporter, record)
        except KeyboardInterrupt:
            interrupted = True
        summary = Summary(
            str(src.resolve()),
            str(out.resolve()),
            config.engine,
            jobs,
            list(reports.values()),
            time.time() - t0,
            interrupted,
            signals.received() if interrupted else None,
        )
        for rep in summary.jobs:
            if rep.state == "running":  # interrupted before its worker reported
                rep.state = "interrupted"
        manifest.end_run(run_id, summary.exit_status)
        manifest.close()
    return summary
