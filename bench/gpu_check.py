"""GPU check: every CUDA path of vhsup in one go, each step in its own process.

    make gpu-check                   # a machine with an NVIDIA GPU (the .venv's python)
    make gpu-check SMOKE=1           # the same steps on the CPU at tiny sizes (CI)
    python3 bench/gpu_check.py --out gpu-out --budget 480 [--only engine,train]

Made for a first run on a GPU machine with a short time budget and no
network: run from the source tree (``PYTHONPATH=.``), so nothing replaces
the machine's torch. A PyAV wheel (cp312, fetched beforehand with
``pip download``) found under ``--wheels`` (``.whl/``) is installed into a
temporary folder when ``import av`` fails; compact-x4's converted weights
come from ``$VHSUP_CACHE_DIR`` (carry the cache folder along), and
esrgan-x4 and switched-x4 run with random weights (speed does not depend on
weights).

Steps, most valuable first:

1. ``env``: GPU, driver, versions, onnxruntime's providers, the
   switched-conv implementation ``pick_impl`` chooses, TF32 settings;
2. ``engine``: the torch engine at 720x480: model-only fps and peak memory
   of esrgan-x4 and compact-x4 in bf16 and fp16 at batch 1 and auto, each
   with its largest uint8 difference from fp32 (TF32 off: exact);
3. ``e2e``: ``vhsup bench`` on a generated DV sample (decode -> bwdif ->
   SR -> stabiliser -> encode), x264 medium and ultrafast;
4. ``switched``: bench/switched.py in bf16 (Triton vs dense vs reference,
   forward and forward+backward) and switched-x4 inference;
5. ``train``: a few training steps of compact-x4 and switched-x4, pixel and
   GAN stages, AMP (the precision ``train`` picks), and with checkpointing;
6. ``tests``: the CUDA tests (``pytest -k "cuda or gpu"``, the Triton ones);
7. ``onnx``: ``vhsup bench --backend onnx`` on CUDA where onnxruntime's GPU
   build imports.

Each step runs under its own timeout in a fresh process, so a failure, even
one that takes the CUDA context down, does not stop the later ones; when the
overall budget runs out the rest are skipped (and listed as such). Output
under ``--out`` (``$OUT``, else ``gpu-out/``): ``results.jsonl`` (one JSON
line per measurement, each naming its step), ``steps.log`` (every step's
output) and ``summary.md`` (a table per step, printed at the end too).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (name, timeout on a GPU in s, timeout in smoke mode in s), most valuable first.
STEPS: list[tuple[str, int, int]] = [
    ("env", 60, 60),
    ("engine", 150, 120),
    ("e2e", 120, 120),
    ("switched", 75, 60),
    ("train", 160, 120),
    ("tests", 150, 60),
    ("onnx", 60, 60),
]
#: A step is started only with at least this many seconds of the budget left.
LEAST_SECONDS = 15


# --- the driver -----------------------------------------------------------


def _av_path(wheels: Path, log) -> str | None:
    """A folder to put on PYTHONPATH that makes ``import av`` work, or None if it already does."""
    probe = subprocess.run([sys.executable, "-c", "import av"], capture_output=True)
    if probe.returncode == 0:
        return None
    found = sorted(glob.glob(str(wheels / "av-*.whl"))) + sorted(glob.glob(str(wheels / "platformdirs-*.whl")))
    if not found:
        log(f"# PyAV does not import and no av-*.whl under {wheels}: the steps that decode will fail\n")
        return None
    site = tempfile.mkdtemp(prefix="vhsup-gpu-check-site-")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    done = subprocess.run([*cmd, "--target", site, *found], capture_output=True, text=True)
    log(f"# installed {', '.join(Path(f).name for f in found)} into {site}: rc {done.returncode}\n{done.stderr}")
    return site


def drive(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    results.write_text("")
    log_path = out / "steps.log"
    start = time.monotonic()
    chosen = [s for s in STEPS if not args.only or s[0] in args.only.split(",")]
    unknown = set(args.only.split(",")) - {s[0] for s in STEPS} if args.only else set()
    if unknown:
        print(f"gpu_check: unknown step(s) {', '.join(sorted(unknown))}; steps: {', '.join(s[0] for s in STEPS)}")
        return 2
    summary: list[dict] = []
    with open(log_path, "w", encoding="utf-8") as logf:

        def log(text: str) -> None:
            logf.write(text)
            logf.flush()

        env = dict(os.environ)
        paths = [str(ROOT)]
        site = _av_path(Path(args.wheels), log)
        if site:
            paths.append(site)
        env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONUNBUFFERED"] = "1"
        for name, gpu_limit, smoke_limit in chosen:
            left = args.budget - (time.monotonic() - start)
            limit = min(smoke_limit if args.smoke else gpu_limit, int(left))
            if limit < LEAST_SECONDS:
                summary.append({"step": name, "status": "skipped", "seconds": 0.0, "why": "budget spent"})
                continue
            cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--results", str(results)]
            if args.smoke:
                cmd.append("--smoke")
            if args.fail_step == name:
                cmd.append("--abort")
            log(f"\n===== {name} (limit {limit} s): {' '.join(cmd)}\n")
            t0 = time.monotonic()
            # A process group of its own, so a timeout takes its children (pytest, encoders) too.
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                rc = proc.wait(timeout=limit)
                status = "ok" if rc == 0 else f"failed (rc {rc})"
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()
                status = f"timed out ({limit} s)"
            seconds = round(time.monotonic() - t0, 1)
            log(f"===== {name}: {status} in {seconds} s\n")
            summary.append({"step": name, "status": status, "seconds": seconds})
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    for s in summary:
        _append(results, {"step": s["step"], "kind": "status", **{k: v for k, v in s.items() if k != "step"}})
    text = _summary(summary, rows, smoke=args.smoke)
    (out / "summary.md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(s["status"] in ("ok", "skipped") for s in summary) else 1


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return str(v)


def _summary(summary: list[dict], rows: list[dict], *, smoke: bool) -> str:
    lines = [f"# vhsup GPU check{' (SMOKE: CPU, tiny sizes)' if smoke else ''}, {time.strftime('%Y-%m-%d %H:%M')}", ""]
    lines += ["| step | status | seconds |", "|---|---|---|"]
    lines += [
        f"| {s['step']} | {s['status']}{' (' + s['why'] + ')' if s.get('why') else ''} | {s['seconds']} |"
        for s in summary
    ]
    for s in summary:
        mine = [r for r in rows if r.get("step") == s["step"]]
        if not mine:
            continue
        lines += ["", f"## {s['step']}", ""]
        by_kind: dict[str, list[dict]] = {}
        for r in mine:
            by_kind.setdefault(r.get("kind", ""), []).append(r)
        for kind, group in by_kind.items():
            if kind == "text":
                for r in group:
                    lines += [f"`{r.get('what', '')}`", "", "```", r["text"].rstrip(), "```", ""]
                continue
            keys = [k for k in dict.fromkeys(k for r in group for k in r) if k not in ("step", "kind")]
            lines += [f"{kind}:", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in group]
            lines.append("")
    return "\n".join(lines) + "\n"


def _append(results: Path, row: dict) -> None:
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


# --- the steps (each runs in its own process) --------------------------------


class Step:
    def __init__(self, name: str, results: Path, smoke: bool):
        import torch

        self.name = name
        self.results = results
        self.smoke = smoke
        self.cuda = torch.cuda.is_available() and not smoke
        self.device = "cuda" if self.cuda else "cpu"

    def emit(self, kind: str, **row: object) -> None:
        _append(self.results, {"step": self.name, "kind": kind, **row})
        print(json.dumps({"kind": kind, **row}), flush=True)

    def text(self, what: str, text: str) -> None:
        self.emit("text", what=what, text=text)

    def sh(self, what: str, cmd: list[str], timeout: float) -> int:
        """Run ``cmd`` (a vhsup tool), keep its output as a text row; its return code."""
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            body, rc = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as exc:
            got = [b.decode(errors="replace") if isinstance(b, bytes) else (b or "") for b in (exc.stdout, exc.stderr)]
            body, rc = f"{''.join(got)}\n(timed out after {timeout} s)", 124
        self.text(f"{what} (rc {rc})", body[-6000:])
        return rc

    def sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def per_call(self, fn: Callable[[], object], repeat: int, warm: int = 3) -> float:
        """Seconds per call of ``fn``, after ``warm`` calls, the device synchronised around the timing."""
        for _ in range(warm):
            fn()
        self.sync()
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        self.sync()
        return (time.perf_counter() - t0) / repeat


def step_env(s: Step) -> None:
    import torch

    row: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        row.update(
            gpu=p.name,
            capability=f"{p.major}.{p.minor}",
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            multiprocessors=p.multi_processor_count,
            cudnn=torch.backends.cudnn.version(),
        )
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        row["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    for mod in ("triton", "onnxruntime", "av", "numpy", "cv2"):
        try:
            row[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001 - any failure to import is the finding
            row[mod] = f"missing ({type(exc).__name__}: {str(exc)[:80]})"
    try:
        import onnxruntime as ort

        row["ort_providers"] = ort.get_available_providers()
    except Exception:  # noqa: BLE001
        row["ort_providers"] = []
    from vhsup.kernels import available_impls, fp32_conv_precision, pick_impl, switched_fallback

    row["switched_impl"] = pick_impl(s.device)
    row["switched_available"] = available_impls(s.device)
    row["switched_fallback"] = switched_fallback(s.device) or ""
    if s.cuda:
        row["fp32_convs"] = fp32_conv_precision()
        row["matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32
    s.emit("env", **row)
    if s.cuda:
        # The two ceilings (METHOD.md): copy bandwidth and bf16 matrix rate, on random data.
        n = 2**30
        a = torch.rand(n // 4, device="cuda")
        b = torch.empty_like(a)
        copy_tbs = 2 * n / s.per_call(lambda: b.copy_(a), 10) / 1e12
        m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        tflops = 2 * 8192**3 / s.per_call(lambda: m @ m, 10) / 1e12
        s.emit("ceilings", copy_tb_per_s=round(copy_tbs, 2), bf16_matmul_tflops=round(tflops, 1))
        # Frame-sized copies between host and device, pageable and pinned: what
        # feeding a fast model costs (a 720x480 frame up, a 2880x1920 one down).
        row = {}
        for what, shape in (("up_720x480", (480, 720, 3)), ("down_2880x1920", (1920, 2880, 3))):
            dev = torch.randint(0, 255, shape, dtype=torch.uint8, device="cuda")
            for pinned in (False, True):
                host = torch.empty(shape, dtype=torch.uint8, pin_memory=pinned)
                dst, src = (dev, host) if what.startswith("up") else (host, dev)
                ms = s.per_call(lambda dst=dst, src=src: dst.copy_(src), 20) * 1000
                row[f"{what}_{'pinned' if pinned else 'pageable'}_ms"] = round(ms, 3)
        s.emit("transfers", **row)


def _frames(count: int, h: int, w: int, seed: int = 0) -> list:
    """Textured test frames (detail at several scales, a moving gradient): not zeros, not pure noise."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        img = np.zeros((h, w, 3), np.float32)
        for cell in (4, 16, 64):
            small = rng.random((max(1, h // cell), max(1, w // cell), 3)).astype(np.float32)
            img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) / 3
        img += np.linspace(0, 0.3, w, dtype=np.float32)[None, :, None] * ((i % 5) / 5)
        out.append(np.clip(img * 220, 0, 255).astype(np.uint8))
    return out


def _model(name: str):
    """The named model with its weights where they are at hand, else random weights (speed alike)."""
    from vhsup import registry

    try:
        if registry.has_pretrained_weights(name):
            return registry.load_model(name), "published"
    except Exception as exc:  # noqa: BLE001 - missing weights on a bare machine: time random ones
        print(f"{name}: weights not at hand ({str(exc)[:120]}); random weights", flush=True)
    return registry.build_model(name, seed=0), "random"


def _time_engine(s: Step, model, precision: str, batch: object, frames: list, ref: list | None) -> dict:
    import numpy as np
    import torch

    from vhsup.engine import SREngine

    notices: list[str] = []
    eng = SREngine(model, device=s.device, precision=precision, tile="auto", batch=batch, notice=notices.append)
    h, w = frames[0].shape[:2]
    per_frame = eng.items_per_frame((h, w))
    step = max(1, -(-eng.batch // per_frame))
    if s.cuda:
        torch.cuda.reset_peak_memory_stats()
    eng.upscale([frames[i % len(frames)] for i in range(step)])  # warm-up at the real batch
    s.sync()
    timed = max(3 * step, len(frames) if not s.smoke else step)
    t0 = time.perf_counter()
    outs = []
    for i in range(0, timed, step):
        outs += eng.upscale([frames[k % len(frames)] for k in range(i, i + step)])
    s.sync()
    seconds = time.perf_counter() - t0
    row = {
        "precision": eng.precision,
        "batch_asked": batch,
        "tile": eng.tile,
        "batch": eng.batch,
        "frames": timed,
        "fps": round(timed / seconds, 2),
    }
    if s.cuda:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if ref is not None:
        diffs = [np.abs(o.astype(np.int16) - r.astype(np.int16)) for o, r in zip(outs, ref, strict=False)]
        row["max_diff_vs_fp32"] = int(max(d.max() for d in diffs))
        row["mean_diff_vs_fp32"] = round(float(np.mean([d.mean() for d in diffs])), 4)
    row.update({k: v for k, v in eng.runs_on().items()})
    if notices:
        row["notices"] = notices
    del eng
    if s.cuda:
        torch.cuda.empty_cache()
    return row


def step_engine(s: Step) -> None:
    import torch

    h, w = (48, 64) if s.smoke else (480, 720)
    frames = _frames(4 if s.smoke else 12, h, w)
    precisions = ["bf16"] if s.smoke else ["bf16", "fp16"]
    batches: list[object] = [1, "auto"]
    for name in ("compact-x4", "esrgan-x4"):
        model, weights = _model(name)
        if s.smoke and name == "esrgan-x4":
            frames_m = [f[:24, :32] for f in frames]
        else:
            frames_m = frames
        # The fp32 reference, exact (TF32 off) so that the differences are the precision's alone.
        tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            ref_row = _time_engine(s, model, "fp32", 1, frames_m, None)
            from vhsup.engine import SREngine

            ref_eng = SREngine(model, device=s.device, precision="fp32", tile="auto", batch=1)
            n_ref = 3 * 1 if s.smoke else 12
            ref = ref_eng.upscale([frames_m[k % len(frames_m)] for k in range(n_ref)])
            del ref_eng
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        s.emit("model", model=name, weights=weights, size=f"{w}x{h}", **ref_row, fp32_exact=True)
        if s.cuda:
            s.emit(
                "model",
                model=name,
                weights=weights,
                size=f"{w}x{h}",
                **_time_engine(s, model, "fp32", "auto", frames_m, None),
            )
        for precision in precisions:
            for batch in batches:
                # The reference covers the first frames: compare in order.
                row = _time_engine(s, model, precision, batch, frames_m, ref)
                s.emit("model", model=name, weights=weights, size=f"{w}x{h}", **row)
        del model


def _sample(seconds: float) -> Path:
    from vhsup.samples import make_vhs_sample

    folder = Path(tempfile.mkdtemp(prefix="vhsup-gpu-check-"))
    return make_vhs_sample(folder / "tape.avi", seconds=seconds).path


def _time_stabiliser(s: Step) -> None:
    """The stabiliser alone: ms per 720x480 -> 2880x1920 frame (its CPU part and the device's)."""
    import cv2

    from vhsup.stabilise import Stabiliser

    h, w = (48, 64) if s.smoke else (480, 720)
    src = _frames(1, h + 24, w + 24)[0]
    pics = [src[i : i + h, i : i + w].copy() for i in range(16)]
    srs = [cv2.resize(p, (w * 4, h * 4), interpolation=cv2.INTER_CUBIC) for p in pics]
    st = Stabiliser("auto", device=s.device)
    for i in range(4):  # warm-up: allocations, the flow's buffers
        st.push(i, pics[i], srs[i])
    s.sync()
    t0 = time.perf_counter()
    for i in range(4, len(pics)):
        st.push(i, pics[i], srs[i])
    s.sync()
    ms = (time.perf_counter() - t0) / (len(pics) - 4) * 1000
    s.emit("stabiliser", size=f"{w}x{h} -> {w * 4}x{h * 4}", device=s.device, ms_per_frame=round(ms, 1))


def _time_conversion(s: Step) -> None:
    """swscale's RGB->YUV 4:2:0 at the output size with 1, 4 and 8 threads: the CPU
    stage that feeds the encoder (the encoder runs it with one thread)."""
    import av

    h, w = (192, 256) if s.smoke else (1920, 2880)
    frame = _frames(1, h, w)[0]
    row: dict[str, object] = {"size": f"{w}x{h}"}
    for threads in (1, 4, 8):

        def convert(t: int = threads) -> object:
            return av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p", threads=t)

        row[f"fps_{threads}_threads"] = round(1 / s.per_call(convert, 10, warm=1), 1)
    s.emit("rgb_to_yuv", **row)


def step_e2e(s: Step) -> None:
    from vhsup.bench import run_bench

    _time_stabiliser(s)
    _time_conversion(s)

    sample = _sample(1.0 if s.smoke else 3.0)
    model = "bicubic" if s.smoke else "compact-x4"
    frames = 4 if s.smoke else 90
    for preset, temporal in (("medium", "auto"), ("ultrafast", "auto"), ("ultrafast", "off")):
        if s.smoke and preset == "medium":
            continue
        t0 = time.perf_counter()
        r = run_bench(sample, model=model, frames=frames, device=s.device, preset=preset, temporal=temporal)
        r.pop("input", None)
        s.emit("bench", preset=preset, temporal_asked=temporal, seconds=round(time.perf_counter() - t0, 1), **r)


def step_switched(s: Step) -> None:
    from vhsup import registry

    cmd = [sys.executable, "bench/switched.py", "--device", s.device]
    cmd += ["--batch", "2", "--size", "16", "--repeat", "1"] if s.smoke else ["--dtype", "bf16", "--repeat", "5"]
    rc = s.sh("bench/switched.py " + " ".join(cmd[3:]), cmd, 60)
    model = registry.build_model("switched-x4", seed=0)
    h, w = (24, 32) if s.smoke else (480, 720)
    frames = _frames(2 if s.smoke else 8, h, w)
    row = _time_engine(s, model, "bf16", "auto", frames, None)
    s.emit("model", model="switched-x4", weights="random", size=f"{w}x{h}", **row)
    if rc:
        sys.exit(rc)


def step_train(s: Step) -> None:
    if s.smoke:
        runs = [["--models", "compact-x4", "--stages", "pixel", "--steps", "1", "--batch", "1"]]
    else:
        runs = [
            ["--models", "compact-x4,switched-x4", "--stages", "pixel,gan", "--steps", "3", "--batch", "16"],
            ["--models", "esrgan-x4", "--stages", "pixel", "--steps", "3", "--batch", "8", "--checkpointing"],
        ]
    failed = 0
    for extra in runs:
        cmd = [
            sys.executable,
            "bench/train.py",
            "--device",
            s.device,
            "--threads",
            str(min(8, os.cpu_count() or 1)),
            *extra,
        ]
        failed |= s.sh("bench/train.py " + " ".join(extra), cmd, 75)
    if failed:
        sys.exit(1)


def step_tests(s: Step) -> None:
    if s.smoke:
        # On the CPU every CUDA test skips: collecting them is what can break here.
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--co",
            "-k",
            "cuda or gpu",
            "tests/test_switched_triton.py",
            "tests/test_engine.py",
        ]
    else:
        cmd = [sys.executable, "-m", "pytest", "-q", "-k", "cuda or gpu or triton", "-p", "no:cacheprovider", "tests/"]
    rc = s.sh(" ".join(cmd[1:]), cmd, 140)
    # 5: no tests collected (on a CPU with no CUDA tests to run) is not a failure of the script.
    if rc not in (0, 5):
        sys.exit(rc)


def step_onnx(s: Step) -> None:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers or not s.cuda:
        s.emit("skipped", why=f"onnxruntime {ort.__version__} has no CUDA provider here", providers=providers)
        return
    from vhsup.bench import run_bench

    sample = _sample(1.0)
    r = run_bench(sample, model="compact-x4", frames=24, backend="onnx", device="cuda", preset="ultrafast")
    r.pop("input", None)
    s.emit("bench", **r)


STEP_FUNCS: dict[str, Callable[[Step], None]] = {
    "env": step_env,
    "engine": step_engine,
    "e2e": step_e2e,
    "switched": step_switched,
    "train": step_train,
    "tests": step_tests,
    "onnx": step_onnx,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", default=os.environ.get("OUT") or "gpu-out", help="folder for the results ($OUT, else gpu-out)"
    )
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all steps together (default 480)")
    p.add_argument("--smoke", action="store_true", help="on the CPU at tiny sizes: checks the script itself")
    p.add_argument("--only", default="", help="comma list of steps to run (default: all)")
    p.add_argument("--wheels", default=str(ROOT / ".whl"), help="folder with a PyAV wheel to use if av does not import")
    p.add_argument("--fail-step", default="", help=argparse.SUPPRESS)  # tests: that step's process aborts
    p.add_argument("--step", default="", help=argparse.SUPPRESS)
    p.add_argument("--results", default="", help=argparse.SUPPRESS)
    p.add_argument("--abort", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.step:
        return drive(args)
    s = Step(args.step, Path(args.results), args.smoke)
    if args.abort:
        os.abort()  # as a process whose CUDA context died would end
    STEP_FUNCS[args.step](s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
