"""Benchmark of vqstudy's quantizer and K-means against the libraries people use.

Side by side in one run, repetitions interleaved so that a busy machine slows both
sides alike, medians reported:

- one quantizer training step (nearest-token search, straight-through output,
  commitment loss, backward, EMA update) vs ``vector_quantize_pytorch.VectorQuantize``;
- the step's growth with K and with N next to its arithmetic lower bound (the distance
  matrix product's flops at this machine's matrix-product speed, measured in the same
  run);
- peak resident memory of one step (each in a fresh process);
- Lloyd's K-means vs scikit-learn from the same initial centres, and the K-means that
  the C3 notebook runs (k-means++ seeding, K = 8192);
- why a naive chunked torch loop is slower than scikit-learn: one Lloyd iteration,
  changing one thing at a time.

Never a test: timings on a shared machine say nothing pass/fail. Writes
``benchmarks/results/latest.json``; ``--book`` also refreshes the book's copy of it
(``book/performance_results.json``), the tables page it includes and the scaling
figure. ``--render-only`` redraws those from an existing JSON.

    .venv/bin/python benchmarks/bench_quantizer.py [--reps 5] [--quick] [--book]
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqstudy import quantizer as Q  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
BOOK_JSON = ROOT / "book" / "performance_results.json"
BOOK_TABLES = ROOT / "book" / "performance_tables.md"
BOOK_FIGURE = ROOT / "book" / "performance_scaling.png"

D = 64                  # embedding dimension
N_STEP = 8192           # one CIFAR batch of 128 images at 8x8 latents
BETA = 0.25             # commitment weight
DECAY = 0.99
PEAK_SHAPES = [(256, 1024), (512, 2048)]  # rows x tokens of the products that measure the machine's speed


# ---------------------------------------------------------------- timing helpers

def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict, reps: int, best: bool = False) -> dict:
    """Median seconds of each function: one warm-up call each, then ``reps`` rounds
    that call every function once, so that noise from other processes falls on all;
    the order reverses every round, so that what one call leaves behind (a step that
    freed gigabytes slows the next one) falls on each alike. ``best``: (median, min)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(reps):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(timed(fns[name]))
    if best:
        return {name: (statistics.median(ts), min(ts)) for name, ts in times.items()}
    return {name: statistics.median(ts) for name, ts in times.items()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def matmul_speed(workers: int, seconds: float = 0.15) -> float:
    """FLOP/s of cache-resident float32 matrix products with inner dimension D, on
    ``workers`` threads at once, each running torch single-threaded: the speed the
    arithmetic lower bound assumes. The fastest of ``PEAK_SHAPES`` (the fastest way
    this machine multiplies, so the bound is never flattering)."""
    return max(matmul_speed_at(rows, tokens, workers, seconds) for rows, tokens in PEAK_SHAPES)


def matmul_speed_at(rows: int, tokens: int, workers: int, seconds: float) -> float:
    flops = 2 * rows * tokens * D
    done = [0] * workers

    def spin(i: int) -> None:
        a, b = torch.randn(rows, D), torch.randn(tokens, D)
        out = torch.empty(rows, tokens)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            torch.mm(a, b.t(), out=out)
            done[i] += 1

    with Q.one_torch_thread():
        threads = [threading.Thread(target=spin, args=(i,)) for i in range(workers)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    return sum(done) * flops / elapsed


# ---------------------------------------------------------------- quantizer step

def ours_quantizer(k: int) -> torch.nn.Module:
    return Q.VectorQuantizer(k, D, decay=DECAY).train()


def library_quantizer(k: int) -> torch.nn.Module:
    from vector_quantize_pytorch import VectorQuantize

    return VectorQuantize(dim=D, codebook_size=k, decay=DECAY, commitment_weight=BETA,
                          rotation_trick=False, kmeans_init=False).train()


def step_fn(impl: str, vq: torch.nn.Module, z: torch.Tensor, upstream: torch.Tensor):
    """One training step of the quantizer alone: forward (the EMA update runs inside
    it in training mode, for both), then backward from the gradients a decoder and the
    loss would send: ``upstream`` for the quantized output, ``beta`` for the commitment
    loss (the library's loss comes already multiplied by its ``commitment_weight``)."""
    beta, one = torch.tensor(BETA), torch.tensor(1.0)

    def ours():
        leaf = z.detach().requires_grad_()
        z_q, _, commitment = vq(leaf)
        torch.autograd.backward([z_q, commitment], [upstream, beta])

    def library():
        leaf = z.detach().requires_grad_()
        z_q, _, loss = vq(leaf[None])
        torch.autograd.backward([z_q, loss], [upstream[None], one])

    return ours if impl == "ours" else library


def index_agreement(k: int, z: torch.Tensor) -> float:
    """Fraction of rows where both pick the same token from the same codebook (a
    check that the two compute the same thing; rounding may split near-ties)."""
    ours, lib = ours_quantizer(k).eval(), library_quantizer(k).eval()
    lib._codebook.embed.data.copy_(ours.codebook[None])
    with torch.no_grad():
        a = ours(z)[1]
        b = lib(z[None])[1][0]
    return (a == b).float().mean().item()


def quantizer_vs_library(ks: list[int], reps: int) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    z, upstream = torch.randn(N_STEP, D, generator=g), torch.randn(N_STEP, D, generator=g)
    for k in ks:
        fns = {impl: step_fn(impl, make(k), z, upstream)
               for impl, make in (("ours", ours_quantizer), ("library", library_quantizer))}
        t = interleaved(fns, reps)
        rows.append({"K": k, "N": N_STEP, "D": D, "ours_ms": 1e3 * t["ours"], "library_ms": 1e3 * t["library"],
                     "speedup": t["library"] / t["ours"], "same_tokens": index_agreement(k, z)})
        print(f"  K={k:6d}  ours {rows[-1]['ours_ms']:9.1f} ms   library {rows[-1]['library_ms']:9.1f} ms   "
              f"{rows[-1]['speedup']:5.1f}x   same tokens {rows[-1]['same_tokens']:.4f}", flush=True)
    return rows


def matmul_alone(n: int, k: int, rows: int, tokens: int, workers: int):
    """The distance product of a step and nothing else: (n x D) times (D x k) in tiles
    of ``rows x tokens`` into a buffer, on ``workers`` threads (as the search runs)."""
    a, b = torch.randn(n, D), torch.randn(k, D)

    def run() -> None:
        local = threading.local()

        def work(r0: int) -> None:
            if not hasattr(local, "out"):
                local.out = torch.empty(rows * tokens)
            block = a[r0:r0 + rows]
            for c0 in range(0, k, tokens):
                part = b[c0:c0 + tokens]
                torch.mm(block, part.t(), out=local.out[:block.shape[0] * part.shape[0]].view(-1, part.shape[0]))

        with Q.one_torch_thread():
            Q.run_blocks(work, range(0, n, rows), workers)
    return run


def scaling(points: list[tuple[int, int]], reps: int, workers: int) -> list[dict]:
    """Step time at each (N, K) next to its bound: the time of the step's distance
    product alone (its flops at the speed this machine multiplies), timed interleaved
    with the step so that both see the same share of a busy machine. The product
    alone runs in the tile shapes of ``PEAK_SHAPES``; the faster one is the bound."""
    rows = []
    g = torch.Generator().manual_seed(1)
    for n, k in points:
        z, upstream = torch.randn(n, D, generator=g), torch.randn(n, D, generator=g)
        fns = {"step": step_fn("ours", ours_quantizer(k), z, upstream)}
        fns.update({shape: matmul_alone(n, k, *shape, workers) for shape in PEAK_SHAPES})
        t = interleaved(fns, reps)
        bound = min(t[shape] for shape in PEAK_SHAPES)
        flops = 2 * n * k * D
        rows.append({"N": n, "K": k, "step_ms": 1e3 * t["step"], "bound_ms": 1e3 * bound,
                     "over_bound": t["step"] / bound, "matmul_gflops": flops / bound / 1e9})
        r = rows[-1]
        print(f"  N={n:6d} K={k:6d}  step {r['step_ms']:8.1f} ms   bound {r['bound_ms']:8.1f} ms   "
              f"{r['over_bound']:5.2f}x bound   (matmul alone {r['matmul_gflops']:.0f} GFLOP/s)", flush=True)
    return rows


def step_parts(points: list[tuple[int, int]], reps: int, workers: int) -> list[dict]:
    """Where a step's time goes, next to its bound: the search alone, the search with the
    tokens, residuals and squared error made per block (``assign``), forward and backward
    without the EMA update (eval mode), and the whole training step; all interleaved with
    the bound's products, each part including the ones before it."""
    rows = []
    g = torch.Generator().manual_seed(2)
    for n, k in points:
        z, upstream = torch.randn(n, D, generator=g), torch.randn(n, D, generator=g)
        codebook = torch.randn(k, D, generator=g)
        fns = {"search": lambda: Q.nearest_token(z, codebook), "assign": lambda: Q.assign(z, codebook),
               "no_ema": step_fn("ours", ours_quantizer(k).eval(), z, upstream),
               "step": step_fn("ours", ours_quantizer(k), z, upstream)}
        fns.update({shape: matmul_alone(n, k, *shape, workers) for shape in PEAK_SHAPES})
        t = interleaved(fns, reps)
        bound = min(t[shape] for shape in PEAK_SHAPES)
        rows.append({"N": n, "K": k, "bound_ms": 1e3 * bound,
                     **{f"{part}_ms": 1e3 * t[part] for part in ("search", "assign", "no_ema", "step")}})
        print("  N={N:6d} K={K:6d}  bound {bound_ms:.1f}  search {search_ms:.1f}  assign {assign_ms:.1f}  "
              "forward+backward {no_ema_ms:.1f}  step {step_ms:.1f} ms".format(**rows[-1]), flush=True)
    return rows


def resident_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MB. Not ``ru_maxrss``: on
    Linux it survives ``exec`` and would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(impl: str, k: int) -> None:
    """In a fresh process: peak resident memory of one training step (printed as JSON)."""
    g = torch.Generator().manual_seed(0)
    z, upstream = torch.randn(N_STEP, D, generator=g), torch.randn(N_STEP, D, generator=g)
    vq = ours_quantizer(k) if impl == "ours" else library_quantizer(k)
    before = resident_mb("VmRSS")
    step_fn(impl, vq, z, upstream)()
    peak = resident_mb("VmHWM")
    print(json.dumps({"impl": impl, "K": k, "N": N_STEP, "rss_before_mb": before, "peak_rss_mb": peak}))


def memory(cases: list[tuple[str, int]]) -> list[dict]:
    rows = []
    for impl, k in cases:
        out = subprocess.run([sys.executable, __file__, "--memory-child", impl, str(k)],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  {impl:8s} K={k:6d}  peak RSS {rows[-1]['peak_rss_mb']:7.0f} MB "
              f"(before the step {rows[-1]['rss_before_mb']:.0f} MB)", flush=True)
    return rows


# ---------------------------------------------------------------- K-means

def inertia(x: torch.Tensor, centres: torch.Tensor) -> float:
    """Sum of squared distances to the nearest centre, by one function for both sides."""
    return Q.distance_to_nearest(x, centres).double().sum().item()


def kmeans_vs_sklearn(n: int, k: int, iters: int, reps: int) -> dict:
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, D, generator=g)
    init = x[torch.randperm(n, generator=g)[:k]].clone()
    x_np, init_np = x.numpy(), init.numpy()
    fitted = {}

    def ours():
        fitted["ours"] = Q.kmeans(x, k, iters=iters, init=init)[0]

    def sklearn():
        km = KMeans(n_clusters=k, init=init_np, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(x_np)
        fitted["sklearn"], fitted["sklearn_iters"] = torch.from_numpy(km.cluster_centers_), km.n_iter_

    t = interleaved({"ours": ours, "sklearn": sklearn}, reps)
    row = {"N": n, "K": k, "D": D, "iters": iters, "reps": reps, "sklearn_iters": int(fitted["sklearn_iters"]),
           "ours_s": t["ours"], "sklearn_s": t["sklearn"], "speedup": t["sklearn"] / t["ours"],
           "inertia_ours": inertia(x, fitted["ours"]), "inertia_sklearn": inertia(x, fitted["sklearn"])}
    row["inertia_ratio"] = row["inertia_ours"] / row["inertia_sklearn"]
    print(f"  ours {row['ours_s']:.2f} s   scikit-learn {row['sklearn_s']:.2f} s   {row['speedup']:.2f}x   "
          f"inertia ratio {row['inertia_ratio']:.5f} (scikit-learn ran {row['sklearn_iters']} iterations)", flush=True)
    return row


def kmeans_seeded(n: int, k: int, iters: int, reps: int) -> dict:
    """The C3 notebook's case: k-means++ seeding and Lloyd, from scratch."""
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(3))
    seeding = interleaved({"seed": lambda: Q.kmeans(x, k, iters=0)}, reps)["seed"]
    total = interleaved({"all": lambda: Q.kmeans(x, k, iters=iters)}, reps)["all"]
    print(f"  kmeans(x({n}, {D}), {k}, iters={iters}): {total:.2f} s, of which k-means++ (+1 pass) {seeding:.2f} s", flush=True)
    return {"N": n, "K": k, "D": D, "iters": iters, "total_s": total, "seeding_s": seeding}


# ---------------------------------------------------------------- why a naive loop is slow

def lloyd_update(x, centres, idx):
    counts, sums = Q.cluster_sums(x, idx, centres.shape[0])
    filled = counts > 0
    centres[filled] = sums[filled] / counts[filled, None]


def chunked(assign, chunk_elements: int = 1 << 22):
    """One Lloyd iteration whose assignment runs ``assign(chunk, centres)`` on chunks of
    ``chunk_elements`` distances (the old vqstudy default: 16 MB)."""
    def iteration(x, centres):
        rows = max(1, chunk_elements // centres.shape[0])
        idx = torch.cat([assign(x[s:s + rows], centres) for s in range(0, x.shape[0], rows)])
        lloyd_update(x, centres, idx)
    return iteration


def addmm_argmin(chunk, centres):
    return torch.addmm(centres.pow(2).sum(1), chunk, centres.t(), alpha=-2.0).argmin(1)


def with_x_norm(chunk, centres):
    d = torch.addmm(centres.pow(2).sum(1), chunk, centres.t(), alpha=-2.0)
    return d.add_(chunk.pow(2).sum(1, keepdim=True)).argmin(1)


def cdist_argmin(chunk, centres):
    return torch.cdist(chunk, centres).argmin(1)


def matmul_only(chunk, centres):
    torch.mm(chunk, centres.t())
    return torch.zeros(chunk.shape[0], dtype=torch.long)


def matmul_amin(chunk, centres):
    torch.addmm(centres.pow(2).sum(1), chunk, centres.t(), alpha=-2.0).amin(1)
    return torch.zeros(chunk.shape[0], dtype=torch.long)


def preallocated(chunk_elements: int = 1 << 22):
    buffer = {}

    def iteration(x, centres):
        k = centres.shape[0]
        rows = max(1, chunk_elements // k)
        if buffer.get("shape") != (rows, k):
            buffer.update(shape=(rows, k), dist=torch.empty(rows, k))
        c_sq = centres.pow(2).sum(1)
        idx = torch.empty(x.shape[0], dtype=torch.long)
        for s in range(0, x.shape[0], rows):
            chunk = x[s:s + rows]
            d = torch.addmm(c_sq, chunk, centres.t(), alpha=-2.0, out=buffer["dist"][:chunk.shape[0]])
            torch.argmin(d, 1, out=idx[s:s + chunk.shape[0]])
        lloyd_update(x, centres, idx)
    return iteration


def float64(iteration):
    def run(x, centres):
        c = centres.double()
        iteration(x.double(), c)
        centres.copy_(c)
    return run


def ours_iteration(x, centres):
    with Q.one_torch_thread():
        lloyd_update(x, centres, Q.nearest_token(x, centres))


def naive_loop_study(n: int, k: int, reps: int, workers: int, sklearn_per_iteration: float | None) -> list[dict]:
    """One Lloyd iteration (assignment + centre update) on (n, D) with k centres, one
    change at a time from a naive chunked torch loop toward ours; each on all threads
    and on one torch thread (interleaved together)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, D, generator=g)
    init = x[torch.randperm(n, generator=g)[:k]].clone()
    variants = [
        ("naive: cdist + argmin, 16 MB chunks", chunked(cdist_argmin)),
        ("addmm + argmin, 16 MB chunks (old vqstudy)", chunked(addmm_argmin)),
        ("  the same in float64", float64(chunked(addmm_argmin))),
        ("  the same with the |x|^2 term", chunked(with_x_norm)),
        ("  the same, distance buffer allocated once", preallocated()),
        ("  the same, 1 MB chunks", chunked(addmm_argmin, 1 << 18)),
        ("  the same, 256 MB chunks", chunked(addmm_argmin, 1 << 26)),
        ("  the same without the argmin (matrix product only)", chunked(matmul_only)),
        ("  the same with amin instead of argmin", chunked(matmul_amin)),
        ("ours: tiles, two-stage argmin, worker threads", ours_iteration),
    ]
    fns = {}
    for threads in (workers, 1):
        for name, iteration in variants:
            def run(iteration=iteration, threads=threads):
                centres = init.clone()
                previous = torch.get_num_threads()
                torch.set_num_threads(threads)
                try:
                    iteration(x, centres)
                finally:
                    torch.set_num_threads(previous)
            fns[(name, threads)] = run
    t = interleaved(fns, reps)
    flops = 2 * n * k * D
    rows = [{"variant": name, "seconds": t[(name, workers)], "seconds_one_thread": t[(name, 1)],
             "gflops": flops / t[(name, workers)] / 1e9, "gflops_one_thread": flops / t[(name, 1)] / 1e9}
            for name, _ in variants]
    if sklearn_per_iteration is not None:
        rows.append({"variant": "scikit-learn (its 20-iteration fit / 21 passes)", "seconds": sklearn_per_iteration,
                     "seconds_one_thread": None, "gflops": flops / sklearn_per_iteration / 1e9,
                     "gflops_one_thread": None})
    print(f"  {'':55s} {workers} threads          1 thread")
    for row in rows:
        one = (f"{row['seconds_one_thread'] * 1e3:9.1f} ms {row['gflops_one_thread']:6.1f} GFLOP/s"
               if row["seconds_one_thread"] else "")
        print(f"  {row['variant']:55s} {row['seconds'] * 1e3:9.1f} ms {row['gflops']:6.1f} GFLOP/s {one}", flush=True)
    return rows


# ---------------------------------------------------------------- run, save, render

def machine() -> dict:
    import sklearn
    import vector_quantize_pytorch  # noqa: F401
    from importlib.metadata import version

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": commit,
            "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "scikit-learn": sklearn.__version__,
            "vector-quantize-pytorch": version("vector-quantize-pytorch")}


def run(reps: int, quick: bool) -> dict:
    workers = torch.get_num_threads()
    out = {"run": {**machine(), "reps": reps, "quick": quick, "load_average_start": load_average()}}
    print(f"== {out['run']['cpu']}, {workers} torch threads, load average {out['run']['load_average_start']}")
    print("== quantizer step vs vector_quantize_pytorch.VectorQuantize (N = 8192, D = 64)")
    out["quantizer_vs_library"] = quantizer_vs_library([512, 4096] if quick else [512, 4096, 16384], reps)
    print("== quantizer step vs its arithmetic lower bound")
    ks = [512, 4096, 16384] if quick else [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
    ns = [2048, 8192] if quick else [1024, 2048, 4096, 8192, 16384, 32768, 65536]
    out["scaling_K"] = scaling([(N_STEP, k) for k in ks], reps, workers)
    out["scaling_N"] = scaling([(n, 4096) for n in ns], reps, workers)
    print("== where the step's time goes, next to its bound")
    out["step_parts"] = step_parts([(N_STEP, 512), (1024, 4096), (N_STEP, 4096)], max(reps, 9), workers)
    print("== peak resident memory of one step (fresh process each)")
    out["memory"] = memory([("ours", 16384), ("library", 16384)] if quick else
                           [("ours", 16384), ("ours", 65536), ("library", 16384)])
    print("== K-means vs scikit-learn KMeans(n_init=1, algorithm='lloyd'), same initial centres")
    # more repetitions: each is seconds long, and a busy machine swings one by 2x
    out["kmeans_vs_sklearn"] = (kmeans_vs_sklearn(10000, 1024, 20, reps) if quick else
                                kmeans_vs_sklearn(50000, 4096, 20, max(reps, 9)))
    print("== the C3 notebook's K-means (k-means++ seeding)")
    out["kmeans_seeded"] = kmeans_seeded(20000, 2048 if quick else 8192, 20, reps)
    print("== why a naive chunked torch loop is slower than scikit-learn: one Lloyd iteration")
    km = out["kmeans_vs_sklearn"]
    out["naive_loop"] = naive_loop_study(km["N"], km["K"], reps, workers,
                                         km["sklearn_s"] / (km["sklearn_iters"] + 1))
    out["run"]["load_average_end"] = load_average()
    return out


def fmt_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def targets(res: dict) -> str:
    """Issue 7's targets, each judged from the recorded numbers (never typed into the page)."""
    lib, km = res["quantizer_vs_library"], res["kmeans_vs_sklearn"]
    mem = [m for m in res["memory"] if m["impl"] == "ours"]
    big = max(mem, key=lambda m: m["K"])
    bound = res["scaling_K"] + res["scaling_N"]
    worst = max(bound, key=lambda b: b["over_bound"])
    rows = [
        ["quantizer step >= 3x faster than vector-quantize-pytorch (K = "
         + ", ".join(str(q["K"]) for q in lib) + ")",
         ", ".join(f"{q['speedup']:.1f}x" for q in lib), all(q["speedup"] >= 3 for q in lib)],
        ["K-means no slower than scikit-learn's Lloyd", f"{km['speedup']:.2f}x", km["speedup"] >= 1],
        ["K-means inertia within 1.01x of scikit-learn's", f"{km['inertia_ratio']:.5f}",
         km["inertia_ratio"] <= 1.01],
        [f"peak resident memory of one step at K = {big['K']} under 2 GB", f"{big['peak_rss_mb']:.0f} MB",
         big["peak_rss_mb"] < 2048],
        ["step within 1.5x of its arithmetic lower bound (every N and K measured)",
         f"worst {worst['over_bound']:.2f}x at N = {worst['N']}, K = {worst['K']}",
         all(b["over_bound"] <= 1.5 for b in bound)],
    ]
    return fmt_table(["target", "measured", "met"], [[t, m, "yes" if ok else "**no**"] for t, m, ok in rows])


def markdown(res: dict) -> str:
    """The tables of the book's Performance page, from the JSON."""
    r = res["run"]
    parts = [
        "<!-- generated by benchmarks/bench_quantizer.py --book from book/performance_results.json; "
        "do not edit -->",
        f"Run of {r['date']} at commit `{r['commit']}`: {r['cpu']}, {r['cores']} cores, "
        f"{r['torch_threads']} torch threads; torch {r['torch']}, vector-quantize-pytorch "
        f"{r['vector-quantize-pytorch']}, scikit-learn {r['scikit-learn']}; medians of {r['reps']} "
        f"interleaved repetitions; load average (1, 5, 15 min) {r['load_average_start']} at the start and "
        f"{r['load_average_end']} at the end (the machine is shared: other processes ran).",
        "",
        "**Against the targets** (judged from this run's numbers):",
        "",
        targets(res),
        "",
        "**Quantizer training step** (N = 8192 vectors, D = 64; EMA decay 0.99, commitment 0.25, "
        "straight-through, no rotation trick, no k-means init):",
        "",
        fmt_table(["K", "vqstudy (ms)", "vector-quantize-pytorch (ms)", "speed-up", "same tokens"],
                  [[q["K"], f"{q['ours_ms']:.1f}", f"{q['library_ms']:.1f}", f"{q['speedup']:.1f}x",
                    f"{100 * q['same_tokens']:.2f} %"] for q in res["quantizer_vs_library"]]),
        "",
        "**Peak resident memory of one step** (whole process, torch included):",
        "",
        fmt_table(["implementation", "K", "before the step (MB)", "peak (MB)"],
                  [["vqstudy" if m["impl"] == "ours" else "vector-quantize-pytorch", m["K"],
                    f"{m['rss_before_mb']:.0f}", f"{m['peak_rss_mb']:.0f}"] for m in res["memory"]]),
        "",
        "**Step time next to its arithmetic lower bound**: the bound is the time of the step's "
        "distance product alone (2 N K D flops, as cache-sized tiles on both cores, the faster of two "
        "tile shapes), timed interleaved with the step so that both see the same share of the machine:",
        "",
        fmt_table(["N", "K", "step (ms)", "bound (ms)", "step / bound", "matmul alone GFLOP/s"],
                  [[s["N"], s["K"], f"{s['step_ms']:.1f}", f"{s['bound_ms']:.1f}", f"{s['over_bound']:.2f}",
                    f"{s['matmul_gflops']:.0f}"] for s in res["scaling_K"] + res["scaling_N"]]),
        "",
    ]
    if "step_parts" in res:
        parts += [
            "**Where the step's time goes**, as multiples of the bound (each column includes the ones "
            "before it; interleaved with the bound's products, medians of "
            f"{max(r['reps'], 9)}): the search alone; `assign`, the search making each block's tokens, "
            "residuals and squared error; forward and backward without the EMA update; the training step:",
            "",
            fmt_table(["N", "K", "bound (ms)", "search", "assign", "forward + backward", "training step"],
                      [[p["N"], p["K"], f"{p['bound_ms']:.1f}"] +
                       [f"{p[f'{part}_ms'] / p['bound_ms']:.2f}x" for part in ("search", "assign", "no_ema", "step")]
                       for p in res["step_parts"]]),
            "",
        ]
    km = res["kmeans_vs_sklearn"]
    parts += [
        f"**K-means** ({km['N']} x {km['D']}, K = {km['K']}, {km['iters']} Lloyd iterations from the same "
        f"initial centres; scikit-learn `KMeans(n_init=1, algorithm=\"lloyd\", tol=0)` ran "
        f"{km['sklearn_iters']}; medians of {km.get('reps', r['reps'])} repetitions):",
        "",
        fmt_table(["", "vqstudy", "scikit-learn", "ratio"],
                  [["time (s)", f"{km['ours_s']:.2f}", f"{km['sklearn_s']:.2f}", f"{km['speedup']:.2f}x faster"],
                   ["inertia", f"{km['inertia_ours']:.6g}", f"{km['inertia_sklearn']:.6g}",
                    f"{km['inertia_ratio']:.5f}"]]),
        "",
    ]
    s = res["kmeans_seeded"]
    parts += [
        f"The C3 notebook's K-means, `kmeans(x ({s['N']} x {s['D']}), {s['K']}, iters={s['iters']})` with "
        f"k-means++ seeding: {s['total_s']:.1f} s, of which {s['seeding_s']:.1f} s for the seeding (and one assignment pass).",
        "",
        f"**One Lloyd iteration, one change at a time** ({km['N']} x {km['D']}, K = {km['K']}):",
        "",
        fmt_table(["variant", f"ms, {r['torch_threads']} threads", "GFLOP/s", "ms, 1 thread", "GFLOP/s"],
                  [[v["variant"].strip(), f"{1e3 * v['seconds']:.0f}", f"{v['gflops']:.1f}",
                    f"{1e3 * v['seconds_one_thread']:.0f}" if v["seconds_one_thread"] else "",
                    f"{v['gflops_one_thread']:.1f}" if v["gflops_one_thread"] else ""]
                   for v in res["naive_loop"]]),
        "",
    ]
    return "\n".join(parts)


def figure(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, var, fixed in ((axes[0], "scaling_K", "K", f"N = {N_STEP}"),
                                (axes[1], "scaling_N", "N", "K = 4096")):
        rows = res[key]
        xs = [r[var] for r in rows]
        ax.loglog(xs, [r["step_ms"] for r in rows], "o-", label="vqstudy step")
        ax.loglog(xs, [r["bound_ms"] for r in rows], "k--", label="bound: the distance product alone")
        ax.loglog(xs, [1.5 * r["bound_ms"] for r in rows], ":", color="gray", label="1.5 x bound")
        if key == "scaling_K":
            lib = res["quantizer_vs_library"]
            ax.loglog([q["K"] for q in lib], [q["library_ms"] for q in lib], "s-", label="vector-quantize-pytorch")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(var)
        ax.set_ylabel("ms per training step")
        ax.set_title(f"quantizer step vs {var} ({fixed}, D = {D})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def publish(res: dict) -> None:
    BOOK_JSON.write_text(json.dumps(res, indent=1) + "\n")
    BOOK_TABLES.write_text(markdown(res) + "\n")
    figure(res, BOOK_FIGURE)
    print(f"== book: {BOOK_JSON.relative_to(ROOT)}, {BOOK_TABLES.relative_to(ROOT)}, {BOOK_FIGURE.relative_to(ROOT)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions per measurement (median reported)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, to check the script itself")
    p.add_argument("--book", action="store_true", help="also refresh the book's JSON, tables and figure")
    p.add_argument("--render-only", action="store_true", help="redraw the book's tables and figure from --json")
    p.add_argument("--json", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(ROOT)})")
    p.add_argument("--memory-child", nargs=2, metavar=("IMPL", "K"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    if args.render_only:
        publish(json.loads(args.json.read_text()))
        return
    res = run(args.reps, args.quick)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    print(f"== wrote {args.json}")
    print(markdown(res))
    if args.book:
        publish(res)


if __name__ == "__main__":
    main()
