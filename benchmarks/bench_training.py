"""Where the time of one C3 training run goes (CIFAR-10, ConvAutoencoder(16, 32), batch 64,
1000 AdamW steps, 500 of them autoencoder pretraining in the pretrain regime), at one
torch thread, and what makes it faster on CPU.

Side by side in one run, repetitions interleaved (the order reversing every round) so
that a busy machine slows every variant alike; medians reported. Never a test.

Model variants: "before" (the ConvAutoencoder as it computed before it ran channels-last
with in-place ReLUs), "now" (vqstudy.models as it is), "now+cl-weights" (weights stored
channels-last too), "compile" ("now" with encoder and decoder under ``torch.compile``).

- ``steps``: one training step (forward + backward + AdamW) of the autoencoder alone
  (pretraining) and with the quantizer (VectorQuantizer(K, 16) after init_codebook on
  random embeddings) at K = 512 and 8192, per model variant, and with fused AdamW;
  torch.compile's first-call cost (fresh inductor cache, then warm); AdamW's step alone
  (for-loop, foreach, fused); forward / backward / optimizer split; the operators a
  step spends its time in (torch.profiler).
- ``eval``: one evaluation pass over the 10000 test images (encode, quantize, decode,
  metrics: what ``training.evaluate`` does for C3) by model, eval batch size, and
  ``no_grad`` vs ``inference_mode``; ``training.evaluate`` itself and the quantizer alone.
- ``kmeans``: the codebook's K-means (k-means++ seeding + 10 Lloyd iterations) on 20000
  untrained-encoder outputs of D = 16, at K = 512 and 8192.
- ``procs``: two training processes at once against one alone (throughput ratio).
- ``full`` (only with ``--full``): real ``vqstudy.training.train`` runs of the C3 quick
  config, timed by phase, to check the estimate.

Then an estimate of one C3 run and of the 3-seed quick sweep, today and with the
recommended changes. Writes ``benchmarks/results/bench_training.json``.

    .venv/bin/python benchmarks/bench_training.py [--reps 7] [--only steps,eval] [--full]
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import timing  # noqa: E402  (benchmarks/timing.py)
from vqstudy import cifar10, metrics  # noqa: E402
from vqstudy import quantizer as Q  # noqa: E402
from vqstudy.models import ConvAutoencoder  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "bench_training.json"

# the C3 quick profile (notebooks/profiles.yml, cifar10_scaling)
LATENT, WIDTH, BATCH, LR, WD, BETA = 16, 32, 64, 0.002, 1e-4, 0.25
TOTAL_STEPS, PRETRAIN_STEPS, EVAL_BATCH = 1000, 500, 512
KMEANS_SAMPLES, KMEANS_ITERS = 20000, 10
CURVE_POINTS, CURVE_EXAMPLES = 20, 512  # training-curve evaluations per run, on this many test images
KS = (512, 8192)
SWEEP_KS = (32, 128, 512, 2048, 8192)
STEPS_PER_CALL = 5  # training steps per timed call (a step is tens of ms)


# ---------------------------------------------------------------- timing helpers

CLOCK = time.perf_counter  # --clock cpu: time.process_time, this process's CPU seconds


def timed(fn) -> float:
    return timing.timed(fn, CLOCK)


def interleaved(fns: dict, reps: int, warmup: int = 1) -> dict:
    """benchmarks/timing.py's interleaved medians on this script's clock (--clock)."""
    return timing.interleaved(fns, reps, warmup, CLOCK)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def table(title: str, header: list[str], rows: list[list]) -> str:
    cells = [header] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells[1:]]
    return "\n".join(lines)


# ---------------------------------------------------------------- data and models

def cifar():
    tx, ty = cifar10.load("train")
    ex, ey = cifar10.load("test")
    return tx, ty, ex, ey


VARIANTS = ("before", "now", "now+cl-weights", "compile")


def make_model(variant: str, seed: int = 0) -> ConvAutoencoder:
    """The C3 model as ``variant``: "before" computes as the model did before it ran
    channels-last with in-place ReLUs (NCHW encoder; the decoder in its input's layout);
    "now" is vqstudy.models as it is; "now+cl-weights" also stores the conv weights
    channels-last; "compile" is "now" with its encoder and decoder under torch.compile
    (the quantizer, with its worker threads, stays eager between them)."""
    torch.manual_seed(seed)
    model = ConvAutoencoder(LATENT, WIDTH)
    if variant == "before":
        model.channels_last = False
        for m in model.modules():
            if isinstance(m, torch.nn.ReLU):
                m.inplace = False
    elif variant == "now+cl-weights":
        model = model.to(memory_format=torch.channels_last)
    elif variant == "compile":
        model.encoder, model.decoder = torch.compile(model.encoder), torch.compile(model.decoder)
    return model


_codebooks: dict[int, dict] = {}


def quantizer(k: int) -> Q.VectorQuantizer:
    """A VectorQuantizer(k, 16) after init_codebook on random embeddings (made once per k)."""
    if k not in _codebooks:
        vq = Q.VectorQuantizer(k, LATENT)
        vq.init_codebook(torch.randn(max(KMEANS_SAMPLES, 2 * k), LATENT), iters=2, seed=0,
                         vectors_per_batch=BATCH * 64)
        _codebooks[k] = vq.state_dict()
    vq = Q.VectorQuantizer(k, LATENT)
    vq.load_state_dict(_codebooks[k])
    return vq


class Trainer:
    """One training run's state: model, optimizer, quantizer (or none: pretraining),
    a stream of real CIFAR-10 batches; ``steps(n)`` runs n training steps."""

    def __init__(self, phase: str, variant: str, train_x: torch.Tensor, seed: int = 0, optimizer: str = "default"):
        self.model = make_model(variant, seed)
        kwargs = {"foreach": True} if optimizer == "foreach" else {"fused": True} if optimizer == "fused" else {}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=WD, **kwargs)
        self.vq = None if phase == "ae" else quantizer(int(phase[2:]))
        self.train_x = train_x
        self.g = torch.Generator().manual_seed(seed)

    def batch(self) -> torch.Tensor:
        idx = torch.randint(len(self.train_x), (BATCH,), generator=self.g)
        return cifar10.normalize(self.train_x[idx])

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model.encode(x)
        if self.vq is None:
            return F.mse_loss(self.model.decode(z), x)
        z_q, _, commitment = self.vq(z)
        return F.mse_loss(self.model.decode(z_q), x) + BETA * commitment

    def steps(self, n: int = STEPS_PER_CALL) -> None:
        for _ in range(n):
            loss = self.loss(self.batch())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


# ---------------------------------------------------------------- (a) training steps

PHASES = ("ae",) + tuple(f"vq{k}" for k in KS)


def bench_steps(reps: int, train_x: torch.Tensor, try_compile: bool) -> dict:
    out = {"steps_per_call": STEPS_PER_CALL}
    variants = [v for v in VARIANTS if v != "compile"]
    out["compile"] = compile_costs(train_x) if try_compile else {"works": False, "error": "skipped (--no-compile)"}
    if out["compile"]["works"]:
        variants.append("compile")
    trainers = {f"{phase}/{v}": Trainer(phase, v, train_x) for phase in PHASES for v in variants}
    trainers["ae/now+fused-adamw"] = Trainer("ae", "now", train_x, optimizer="fused")
    trainers["vq512/now+fused-adamw"] = Trainer("vq512", "now", train_x, optimizer="fused")
    log("steps: timing", len(trainers), "variants")
    times = interleaved({name: t.steps for name, t in trainers.items()}, reps)
    out["seconds_per_step"] = {name: t / STEPS_PER_CALL for name, t in times.items()}

    # where one step's time goes: forward / backward / optimizer
    parts = {}
    for phase in PHASES:
        for variant in ("before", "now"):
            t = Trainer(phase, variant, train_x)
            t.steps(2)
            fwd, bwd, opt = [], [], []
            for _ in range(max(reps, 5) * STEPS_PER_CALL):
                x = t.batch()
                t0 = CLOCK()
                loss = t.loss(x)
                t1 = CLOCK()
                t.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                t2 = CLOCK()
                t.optimizer.step()
                t3 = CLOCK()
                fwd.append(t1 - t0), bwd.append(t2 - t1), opt.append(t3 - t2)
            parts[f"{phase}/{variant}"] = {"forward": statistics.median(fwd), "backward": statistics.median(bwd),
                                           "optimizer": statistics.median(opt)}
    out["parts"] = parts

    # AdamW alone on this model's 20 parameters: for-loop (the CPU default), foreach, fused
    opts = {}
    for kind in ("default", "foreach", "fused"):
        t = Trainer("ae", "now", train_x, optimizer=kind)
        t.steps(1)  # gradients exist and the optimizer state is made
        opts[kind] = t.optimizer.step
    times = interleaved({k: (lambda f=f: [f() for _ in range(20)]) for k, f in opts.items()}, reps)
    out["adamw_step"] = {k: v / 20 for k, v in times.items()}
    out["profile"] = {f"{phase}/{v}": profile_step(phase, v, train_x)
                      for phase in ("ae", f"vq{KS[-1]}") for v in ("before", "now")}
    return out


def compile_costs(train_x: torch.Tensor) -> dict:
    """Does torch.compile work here? First-call cost of a compiled training step with a
    fresh inductor cache (cold) and of a second, new model in the same process (warm),
    and of the first evaluation batches (no grad: another graph; the last, shorter batch
    of 10000 / 512: a recompile). Wall-clock seconds whatever --clock says (inductor
    compiles in worker processes)."""
    global CLOCK
    clock, CLOCK = CLOCK, time.perf_counter
    info = {}
    try:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
            for which in ("cold", "warm"):
                for phase in ("ae", f"vq{KS[0]}"):
                    t = Trainer(phase, "compile", train_x, seed=1)
                    first = timed(lambda: t.steps(1))
                    second = timed(lambda: t.steps(1))  # a recompile, if the first call's guards fail
                    steady = timed(lambda: t.steps(3)) / 3
                    info[f"train {phase} {which}"] = first + second - 2 * steady
                    log(f"compile {phase} {which}: {info[f'train {phase} {which}']:.1f} s")
            model = make_model("compile", seed=1).eval()
            with torch.no_grad():
                for batch in (EVAL_BATCH, 10000 % EVAL_BATCH):
                    x = cifar10.normalize(train_x[:batch])
                    first = timed(lambda: model.decode(model.encode(x)))
                    steady = timed(lambda: model.decode(model.encode(x)))
                    info[f"eval batch {batch}"] = first - steady
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
        info["works"] = True
    except Exception as exc:  # no compiler, or inductor fails on this machine
        info = {"works": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    CLOCK = clock
    return info


def profile_step(phase: str, variant: str, train_x: torch.Tensor, top: int = 8) -> list:
    """Self CPU time by operator and input shapes over 10 steps (profiler overhead included)."""
    from torch.profiler import ProfilerActivity, profile

    t = Trainer(phase, variant, train_x)
    t.steps(2)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t.steps(10)
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [[e.key, str(e.input_shapes[:2]).replace(" ", ""), round(e.self_cpu_time_total / 10 / 1e3, 3),
             round(e.self_cpu_time_total / total, 3)] for e in events[:top]]


# ---------------------------------------------------------------- (b) evaluation

def eval_pass(model, vq, ex, ey, batch: int, mode: str = "no_grad", quantize: bool = True) -> dict:
    """What ``training.evaluate`` computes for C3 (keep_embeddings = 0): MSE, embedding
    variance, token counts, perplexity, usage, class coverage, 16 reconstructions."""
    model.eval()
    vq.eval()
    ctx = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
    sse, n_values, all_idx, all_labels = 0.0, 0, [], []
    moments, n_vectors = torch.zeros(2, LATENT, dtype=torch.float64), 0
    with ctx:
        for i in range(0, len(ex), batch):
            x = cifar10.normalize(ex[i:i + batch])
            z = model.encode(x)
            z_q, idx, _ = vq(z) if quantize else (z, None, None)
            rec = model.decode(z_q)
            sse += float(F.mse_loss(rec, x, reduction="sum"))
            n_values += x.numel()
            flat = z.reshape(-1, LATENT).double()
            moments[0] += flat.sum(0)
            moments[1] += flat.pow(2).sum(0)
            n_vectors += len(flat)
            if i == 0:
                kept = rec[:16].clone()
            if quantize:
                all_idx.append(idx.reshape(-1))
                all_labels.append(ey[i:i + batch].view(-1, 1, 1).expand(z.shape[:-1]).reshape(-1))
        out = {"mse": sse / n_values, "kept": kept}
        if quantize:
            idx, labels = torch.cat(all_idx), torch.cat(all_labels)
            counts = metrics.token_counts(idx, vq.num_tokens)
            out.update(perplexity=metrics.perplexity(counts), usage=metrics.usage(counts),
                       **metrics.class_coverage(idx, labels, vq.num_tokens, 10))
    model.train()
    vq.train()
    return out


def quantize_all(vq, z: torch.Tensor, batch: int = 512) -> None:
    vq.eval()
    with torch.no_grad():
        for i in range(0, len(z), batch):
            vq(z[i:i + batch])
    vq.train()


def bench_eval(reps: int, ex: torch.Tensor, ey: torch.Tensor) -> dict:
    """Names are KIND/MODEL/bBATCH/MODE, KIND one of continuous, K512, K8192."""
    from vqstudy import training

    models = {v: make_model(v) for v in ("before", "now")}
    vqs = {k: quantizer(k) for k in KS}
    grid = [(kind, model, b, "no_grad") for kind in ("continuous", "K512", "K8192")
            for model, b in (("before", 512), ("now", 512), ("now", 128))]
    grid += [("K512", "now", b, "no_grad") for b in (64, 256, 1024, 2048)]
    grid += [("K512", "now", b, "inference_mode") for b in (128, 512)]
    fns = {}
    for kind, model, b, mode in grid:
        vq = vqs[512] if kind == "continuous" else vqs[int(kind[1:])]
        fns[f"{kind}/{model}/b{b}/{mode}"] = (lambda m=models[model], vq=vq, b=b, mode=mode, q=kind != "continuous":
                                              eval_pass(m, vq, ex, ey, b, mode, q))

    # the real thing, for reference: vqstudy.training.evaluate (batch 512, no_grad)
    cfg = training.Config(data="cifar10", model="conv", latent_dim=LATENT, hidden=WIDTH, codebook_size=512,
                          keep_embeddings=0, keep_reconstructions=16)
    data = training.Data(ex[:0], ey[:0], ex, ey, cifar10.normalize)
    for k in KS:
        fns[f"training.evaluate K{k} (now)"] = (lambda k=k: training.evaluate(models["now"], vqs[k], data,
                                                                              cfg.replace(codebook_size=k), "cpu"))
    # the quantizer alone over the 640000 test embeddings (eval mode), batches of 512 images
    with torch.no_grad():
        z_all = torch.cat([models["now"].encode(cifar10.normalize(ex[i:i + 512])) for i in range(0, len(ex), 512)])
    for k in KS:
        fns[f"quantize only K{k}"] = lambda k=k: quantize_all(vqs[k], z_all.reshape(-1, LATENT), 512 * 64)
    log("eval: timing", len(fns), "variants")
    times = interleaved(fns, reps)

    # the variants agree: same weights and codebook -> same metrics
    a = eval_pass(models["before"], vqs[512], ex, ey, 512)
    b = eval_pass(models["now"], vqs[512], ex, ey, 128, "inference_mode")
    agree = {"mse_rel_diff": abs(a["mse"] - b["mse"]) / a["mse"],
             "perplexity_before_b512_vs_now_b128": [a["perplexity"], b["perplexity"]],
             "classes_covered": [a["classes_covered"], b["classes_covered"]]}
    return {"seconds": times, "agreement": agree}


# ---------------------------------------------------------------- (c) K-means

def bench_kmeans(reps: int, train_x: torch.Tensor) -> dict:
    """On what the baseline regime clusters: the untrained encoder's outputs of
    20000 / 64 training images (as ``training.encode_all`` makes them)."""
    model = make_model("now")
    sample = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[:KMEANS_SAMPLES // 64]
    with torch.no_grad():
        z = model.encode(cifar10.normalize(train_x[sample])).reshape(-1, LATENT)[:KMEANS_SAMPLES].contiguous()
    fns = {}
    for k in KS:
        fns[f"K{k} kmeans (++ and {KMEANS_ITERS} iters)"] = lambda k=k: Q.kmeans(z, k, iters=KMEANS_ITERS, seed=0)
        fns[f"K{k} k-means++ seeding"] = lambda k=k: Q.kmeans_plus_plus(z, k, torch.Generator().manual_seed(0))
        init = z[:k].clone()
        fns[f"K{k} {KMEANS_ITERS} Lloyd iters"] = lambda k=k, init=init: Q.kmeans(z, k, iters=KMEANS_ITERS, init=init)
    log("kmeans: timing", len(fns), "variants")
    return {"n": len(z), "seconds": interleaved(fns, max(3, reps // 2))}


# ---------------------------------------------------------------- (d) two processes

def worker(phase: str, variant: str, steps: int) -> None:
    """Child process: build a trainer, say ready, wait for go, time ``steps`` steps."""
    torch.set_num_threads(1)
    t = Trainer(phase, variant, cifar10.load("train")[0])
    t.steps(3)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()  # wall clock: the point is what two processes share
    t.steps(steps)
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def run_workers(n: int, phase: str, variant: str, steps: int) -> list[float]:
    """``n`` worker processes started together; the timed part begins when all are ready."""
    cmd = [sys.executable, __file__, "--worker", phase, variant, str(steps)]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    out = [json.loads(p.stdout.readline())["seconds"] for p in procs]
    for p in procs:
        p.wait()
    return out


def bench_procs(reps: int, steps: int = 100) -> dict:
    """Seconds per step of one process alone and of each of two at once; the throughput
    ratio is (2 steps per t_together) / (1 step per t_alone) = 2 t_alone / t_together."""
    out = {}
    for phase in ("ae", "vq512", "vq8192"):
        alone, together = [], []
        for r in range(max(2, reps // 2)):
            for what in (("alone", "together") if r % 2 == 0 else ("together", "alone")):
                if what == "alone":
                    alone.append(run_workers(1, phase, "now", steps)[0] / steps)
                else:
                    together.extend(s / steps for s in run_workers(2, phase, "now", steps))
        a, t = statistics.median(alone), statistics.median(together)
        out[phase] = {"alone_s_per_step": a, "together_s_per_step": t, "throughput_ratio": 2 * a / t}
        log(f"procs {phase}: alone {a * 1e3:.1f} ms, together {t * 1e3:.1f} ms, ratio {2 * a / t:.2f}")
    return out


# ---------------------------------------------------------------- full runs

def bench_full(ks) -> dict:
    """Real ``training.train`` runs of the C3 quick config, each phase timed by wrapping
    ``training.evaluate`` and ``VectorQuantizer.init_codebook`` (training.py unchanged)."""
    from vqstudy import training

    base = training.Config(data="cifar10", model="conv", latent_dim=LATENT, hidden=WIDTH, total_steps=TOTAL_STEPS,
                           pretrain_steps=PRETRAIN_STEPS, batch_size=BATCH, lr=LR, kmeans_iters=KMEANS_ITERS,
                           kmeans_samples=KMEANS_SAMPLES, keep_embeddings=0, keep_reconstructions=16)
    if hasattr(base, "curve_points"):
        base = base.replace(curve_points=CURVE_POINTS, curve_examples=CURVE_EXAMPLES)
    out = {}
    evaluate, init_codebook = training.evaluate, Q.VectorQuantizer.init_codebook
    for regime in ("baseline", "pretrain"):
        for k in ks:
            spent = {"evaluate": 0.0, "init_codebook": 0.0}

            def clocked(fn, name):
                def wrapped(*a, **kw):
                    t0 = time.perf_counter()
                    try:
                        return fn(*a, **kw)
                    finally:
                        spent[name] += time.perf_counter() - t0
                return wrapped

            training.evaluate = clocked(evaluate, "evaluate")
            Q.VectorQuantizer.init_codebook = clocked(init_codebook, "init_codebook")
            getattr(training, "_PRETRAINED", {}).clear()  # every pretrain run pays its pretraining here
            try:
                r = training.train(base.replace(regime=regime, codebook_size=k, seed=0))
            finally:
                training.evaluate, Q.VectorQuantizer.init_codebook = evaluate, init_codebook
            spent["total"] = r["seconds"]
            spent["steps"] = r["seconds"] - spent["evaluate"] - spent["init_codebook"]
            out[f"{regime}/K{k}"] = spent
            log(f"full {regime} K={k}: " + ", ".join(f"{n} {v:.1f} s" for n, v in spent.items()))
    return out


# ---------------------------------------------------------------- estimate

def estimate(res: dict) -> dict:
    """Seconds of one C3 run and of the 3-seed quick sweep (5 K x 2 regimes x 3 seeds;
    the 5 pretrain runs of a seed share one pretraining), from the measured parts.
    Between the measured K = 512 and 8192, linear in log K; K = 32 and 128 taken as 512
    (the quantizer is a small part there, so slightly high).

    Each run also measures ``CURVE_POINTS`` training-curve points on ``CURVE_EXAMPLES``
    test images (training.py's curves; cost scaled from a full pass by the image count).
    Scenarios: "today" (the model before, training.py as it is); "model" (the committed
    model, training.py as it is); "recommended" (also: fused AdamW, the evaluation batch
    and mode measured fastest, and one continuous evaluation per seed and regime instead
    of one per run)."""
    steps, ev, km = res.get("steps"), res.get("eval"), res.get("kmeans")
    if not (steps and ev and km):
        return {}
    sps, es, ks = steps["seconds_per_step"], ev["seconds"], km["seconds"]
    fused_saving = steps["adamw_step"]["default"] - steps["adamw_step"]["fused"]

    def at(k, v512, v8192):
        return v512 if k <= 512 else v512 + (v8192 - v512) * (math.log2(k) - 9) / 4

    kinds = ("continuous", "K512", "K8192")
    best_batch = min((128, 512), key=lambda b: sum(es[f"{kind}/now/b{b}/no_grad"] for kind in kinds))
    faster = es[f"K512/now/b{best_batch}/inference_mode"] < es[f"K512/now/b{best_batch}/no_grad"]
    mode = "inference_mode" if faster else "no_grad"
    mode_factor = es[f"K512/now/b{best_batch}/{mode}"] / es[f"K512/now/b{best_batch}/no_grad"]
    scenarios = {
        "today": dict(model="before", batch=512, mode_factor=1.0, saving=0.0, shared_continuous=False),
        "model": dict(model="now", batch=512, mode_factor=1.0, saving=0.0, shared_continuous=False),
        "recommended": dict(model="now", batch=best_batch, mode_factor=mode_factor, saving=fused_saving,
                            shared_continuous=True),
    }
    km_name = f"kmeans (++ and {KMEANS_ITERS} iters)"
    kmeans = {k: at(k, ks[f"K512 {km_name}"], ks[f"K8192 {km_name}"]) for k in SWEEP_KS}
    out = {"recommended_eval": {"batch": best_batch, "mode": mode}, "fused_adamw_saving_s_per_step": fused_saving}
    for name, s in scenarios.items():
        m, b = s["model"], s["batch"]

        def ev_cost(kind, k=None):
            if kind == "continuous":
                return es[f"continuous/{m}/b{b}/no_grad"] * s["mode_factor"]
            return at(k, es[f"K512/{m}/b{b}/no_grad"], es[f"K8192/{m}/b{b}/no_grad"]) * s["mode_factor"]

        ae_points = CURVE_POINTS * PRETRAIN_STEPS // TOTAL_STEPS  # curve points during pretraining (no quantizer)
        pretraining = ((sps[f"ae/{m}"] - s["saving"]) * PRETRAIN_STEPS
                       + ae_points * CURVE_EXAMPLES / 10000 * ev_cost("continuous"))

        def run(k, regime, with_pretraining=True):
            vq_step = at(k, sps[f"vq512/{m}"], sps[f"vq8192/{m}"]) - s["saving"]
            n_vq, vq_points = TOTAL_STEPS, CURVE_POINTS
            pre = 0.0
            if regime == "pretrain":
                n_vq, vq_points = TOTAL_STEPS - PRETRAIN_STEPS, CURVE_POINTS - ae_points
                pre = pretraining if with_pretraining else 0.0
            curve = vq_points * CURVE_EXAMPLES / 10000 * ev_cost("K", k)
            return pre + n_vq * vq_step + ev_cost("continuous") + 2 * ev_cost("K", k) + kmeans[k] + curve

        per_run = {f"{regime}/K{k}": run(k, regime) for regime in ("baseline", "pretrain") for k in KS}
        sweep = 3 * sum(run(k, "baseline") + run(k, "pretrain", with_pretraining=False) for k in SWEEP_KS)
        sweep += 3 * pretraining
        if s["shared_continuous"]:  # 2 continuous evaluations per seed instead of 10
            sweep -= 3 * 8 * ev_cost("continuous")
        procs = res.get("procs", {})
        ratios = [v["throughput_ratio"] for v in procs.values()]
        ratio = statistics.median(ratios) if ratios else None
        out[name] = {"per_run": per_run, "sweep_one_process": sweep,
                     "sweep_two_processes": sweep / ratio if ratio else None, "throughput_ratio": ratio}
    return out


# ---------------------------------------------------------------- report

def report(res: dict) -> str:
    parts = []
    if "steps" in res:
        s = res["steps"]
        sps = s["seconds_per_step"]
        variants = [v for v in VARIANTS if f"ae/{v}" in sps] + ["now+fused-adamw"]
        rows = [[p] + [sps[f"{p}/{v}"] * 1e3 if f"{p}/{v}" in sps else "" for v in variants] for p in PHASES]
        parts.append(table("(a) one training step, ms (median, interleaved)", ["step"] + variants, rows))
        rows = [[p] + [v[n] * 1e3 for n in ("forward", "backward", "optimizer")] for p, v in s["parts"].items()]
        parts.append(table("(a) where a step goes, ms", ["step", "forward", "backward", "optimizer"], rows))
        parts.append(table("(a) AdamW step alone, ms", ["variant", "ms"],
                           [[k, v * 1e3] for k, v in s["adamw_step"].items()]))
        c = s["compile"]
        parts.append(table("(a) torch.compile first-call cost, s", ["what", "s"], [[k, v] for k, v in c.items()]))
        for name, rows in s["profile"].items():
            parts.append(table(f"(a) profile of a {name} step (self ms per step)", ["op", "shapes", "ms", "share"],
                               rows))
    if "eval" in res:
        parts.append(table("(b) one evaluation pass over 10000 test images, s", ["variant", "s"],
                           [[k, v] for k, v in res["eval"]["seconds"].items()]))
        parts.append(f"(b) agreement: {res['eval']['agreement']}")
    if "kmeans" in res:
        parts.append(table(f"(c) K-means on {res['kmeans']['n']} vectors, D={LATENT}, s", ["variant", "s"],
                           [[k, v] for k, v in res["kmeans"]["seconds"].items()]))
    if "procs" in res:
        parts.append(table("(d) two processes at once vs one (model now)", ["step", "alone ms", "together ms", "ratio"],
                           [[k, v["alone_s_per_step"] * 1e3, v["together_s_per_step"] * 1e3, v["throughput_ratio"]]
                            for k, v in res["procs"].items()]))
    if "full" in res:
        parts.append(table("real training.train runs, s", ["run", "total", "steps", "evaluate", "init_codebook"],
                           [[k, v["total"], v["steps"], v["evaluate"], v["init_codebook"]]
                            for k, v in res["full"].items()]))
    est = res.get("estimate")
    if est:
        rows = [[name] + [est[name]["per_run"][f"{r}/K{k}"] for r in ("baseline", "pretrain") for k in KS]
                + [est[name]["sweep_one_process"] / 60, (est[name]["sweep_two_processes"] or float("nan")) / 60]
                for name in ("today", "model", "recommended")]
        parts.append(table("estimate: one C3 run (s) and the 3-seed quick sweep (min)",
                           ["scenario"] + [f"{r[:4]} K{k}" for r in ("baseline", "pretrain") for k in KS]
                           + ["sweep 1 proc", "sweep 2 procs"], rows))
        parts.append(f"recommended evaluation: {est['recommended_eval']}; 2-process throughput ratio used: "
                     f"{est['today']['throughput_ratio']}")
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description="Where the time of one C3 training run goes, at one torch thread, "
                                                 "and what makes it faster on CPU (see the module docstring).")
    parser.add_argument("--reps", type=int, default=7, help="interleaved rounds per measurement")
    parser.add_argument("--only", default="steps,eval,kmeans,procs",
                        help="comma-separated sections: steps, eval, kmeans, procs; the JSON keeps the others' last "
                             "results (none: only --full, or only re-print)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--full", action="store_true", help="also time real training.train runs (minutes)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time (steadier on a machine others load; "
                             "the two-process section always uses the wall clock)")
    parser.add_argument("--worker", nargs=3, metavar=("PHASE", "VARIANT", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], args.worker[1], int(args.worker[2]))

    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(int(os.environ.get("VQSTUDY_THREADS", "1")))
    sections = args.only.split(",")
    tx, ty, ex, ey = cifar()
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads(), "reps": args.reps,
           "clock": args.clock,
           "load_average_before": load_average()}
    started = time.perf_counter()
    benches = {"steps": lambda: bench_steps(args.reps, tx, not args.no_compile),
               "eval": lambda: bench_eval(max(3, args.reps // 2), ex, ey),
               "kmeans": lambda: bench_kmeans(args.reps, tx),
               "procs": lambda: bench_procs(args.reps),
               "full": lambda: bench_full(KS)}
    measured = {}  # per section: when, under what load, with which clock
    for name, bench in benches.items():
        if name in sections or (name == "full" and args.full):
            before = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "load_before": load_average(),
                      "clock": "wall" if name in ("procs", "full") else args.clock}
            res[name] = bench()
            measured[name] = {**before, "load_after": load_average()}
    res["load_average_after"] = load_average()
    res["seconds"] = time.perf_counter() - started
    if RESULTS.exists():  # keep the sections this run did not measure
        old = json.loads(RESULTS.read_text())
        measured = {**old.get("measured", {}), **measured}
        res = {**{k: v for k, v in old.items() if k in benches}, **res}
    res["measured"] = measured
    res["estimate"] = estimate(res)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1, default=float))
    print(report(res))
    print("\nsections measured: " + "; ".join(f"{k} {v['date']} ({v['clock']} clock, load {v['load_before'][0]} -> "
                                               f"{v['load_after'][0]})" for k, v in res["measured"].items()))
    print(f"written {RESULTS.relative_to(ROOT)}; {res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
