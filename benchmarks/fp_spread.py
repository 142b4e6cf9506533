"""How far a run's final metrics move when only the floating-point path changes.

The same code, config and seed gave C2h's seed 0 a Spearman ρ of 0.77 on one machine and
0.66 on another. This script trains the runs the verdicts turn on, once as the study trains
them (one torch thread, channels-last convolutions, oneDNN on) and once per change of the
floating-point path alone, which changes the order of additions and so the rounding:

- ``threads2``: two torch threads (matrix products split differently);
- ``nchw``: the conv model without channels-last (other convolution kernels; CIFAR-10 only);
- ``no_onednn``: oneDNN (mkldnn) switched off (other kernels for convolutions);
- ``other_isa``: the kernels another CPU would run: MKL's compatible code path
  (``MKL_CBWR=COMPATIBLE``) and torch's plain vector kernels (``ATEN_CPU_CAPABILITY=default``)
  instead of this CPU's AVX-512 ones. Threads and oneDNN leave the small MLPs of C1 and C2
  bit for bit the same; this is the change that moves them, as another machine does.

Each run trains in a fresh process (the environment variables take effect at start-up).

Per metric, the spread is the largest relative change ``|variant / base - 1|`` over the
runs and variants; it goes into a record (``records/fp-spread-DATE/fp_spread.json``), which
the fragility rule reads (:mod:`vqstudy.rules`, the Protocol page). Data, not a test.

    .venv/bin/python benchmarks/fp_spread.py [--quick] [--out records/fp-spread-DATE] [--render]
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqstudy import models, training  # noqa: E402
from vqstudy.training import Config  # noqa: E402

METRICS = ("mse", "usage", "perplexity", "codebook_spread", "probe_accuracy", "fisher_ratio", "silhouette")
C1 = dict(codebook_size=1024, total_steps=2000, pretrain_steps=1000, curve_points=0, curve_examples=5000)
C2H = dict(codebook_size=64, separation=3.0, input_dim=64, total_steps=2000, pretrain_steps=1000, curve_points=0,
           keep_embeddings=5000, regime="pretrain")
C3 = dict(data="cifar10", model="conv", hidden=32, latent_dim=16, total_steps=1000, pretrain_steps=500,
          batch_size=64, lr=0.002, kmeans_iters=10, kmeans_samples=20000, keep_embeddings=2000, curve_points=0)


def runs(quick: bool) -> dict[str, Config]:
    """The runs the verdicts turn on: C1 at its largest K, C2h's widths (its ρ flipped),
    C3 at K = 512 and 8192; both regimes where the verdict compares them; seed 0."""
    out = {}
    for regime in ("baseline", "pretrain"):
        out[f"C1 K=1024 {regime}"] = Config(regime=regime, **C1)
    for w in ([2, 16] if quick else [2, 4, 8, 16, 64, 256]):
        out[f"C2h width {w} pretrain"] = Config(hidden=w, **C2H)
    for k in ([512] if quick else [512, 8192]):
        for regime in ("baseline", "pretrain"):
            out[f"C3 K={k} {regime}"] = Config(regime=regime, codebook_size=k, **C3)
    if quick:
        out = {name: cfg.replace(total_steps=cfg.total_steps // 10, pretrain_steps=cfg.pretrain_steps // 10,
                                 **({"train_subset": 5000, "eval_subset": 1000, "kmeans_samples": 8192}
                                    if cfg.data == "cifar10" else {}))
               for name, cfg in out.items()}
    return out


VARIANT_ENV = {"threads2": {"VQSTUDY_THREADS": "2"},
               "other_isa": {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}}


def train_variant(cfg: Config, variant: str) -> dict:
    """Train ``cfg`` with the floating-point path ``variant`` changed, in a fresh process."""
    import dataclasses

    env = {**os.environ, "VQSTUDY_THREADS": "1", **VARIANT_ENV.get(variant, {})}
    for name in ("MKL_CBWR", "ATEN_CPU_CAPABILITY"):
        if name not in VARIANT_ENV.get(variant, {}):
            env.pop(name, None)
    out = subprocess.run([sys.executable, __file__, "--child", variant, json.dumps(dataclasses.asdict(cfg))],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(variant: str, config: str) -> dict:
    """In the fresh process: the in-process changes (oneDNN, channels-last), then train."""
    cfg = Config(**json.loads(config))
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = variant != "no_onednn"
    original = models.ConvAutoencoder.__init__

    def nchw(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.channels_last = False

    if variant == "nchw":
        models.ConvAutoencoder.__init__ = nchw
    try:
        result = training.train(cfg)
    finally:
        models.ConvAutoencoder.__init__ = original
        torch.backends.mkldnn.enabled = onednn
    return {m: float(result["metrics"][m]) for m in METRICS if m in result["metrics"]}


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


BOOK_TABLE = ROOT / "book" / "fp_spread_table.md"  # included by the Protocol page


def markdown(out: dict, folder: Path) -> str:
    """The Protocol page's table: per metric, the largest relative change and where."""
    m = out["machine"]
    from vqstudy.rules import typical_spread

    typical = typical_spread(out)
    rows = []
    for metric in out["metrics"]:
        changes = [(row["change"].get(metric, 0.0), row["run"], row["variant"]) for row in out["runs"]]
        worst = max(changes, default=(0.0, "", ""))
        stable = sorted({r for c, r, _ in changes if c == 0.0} - {r for c, r, _ in changes if c > 0.0})
        rows.append(f"| {metric} | **{typical.get(metric, 0.0):.2%}** | {worst[0]:.2%} | {worst[1]}, {worst[2]} | "
                    f"{len(stable)} of {len({r for _, r, _ in changes})} |")
    try:
        where = folder.resolve().relative_to(ROOT)
    except ValueError:
        where = folder
    return "\n".join([
        "<!-- generated by benchmarks/fp_spread.py; do not edit -->",
        f"Measured on {m['date']} at commit `{m['commit'][:7]}` ({m['cpu']}, torch {m['torch']}), "
        f"{len({r['run'] for r in out['runs']})} runs, {out['seconds']:.0f} s; the record is "
        f"`{where}/fp_spread.json`. Runs: " + ", ".join(sorted({r["run"] for r in out["runs"]}))
        + (f"; {out['note']}" if out.get("note") else "") + ".", "",
        "| metric | typical run's spread (used) | largest relative change | in (run, change of path) "
        "| runs bit for bit the same under every change |",
        "| --- | --- | --- | --- | --- |", *rows, "",
        "*Typical run's spread*: the median over the runs of each run's largest relative change under any "
        "change of the path; this is what the fragility test scales every metric by "
        "(`vqstudy.rules.typical_spread`).", ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs, to check the script itself")
    p.add_argument("--out", type=Path, default=ROOT / "records" / f"fp-spread-{datetime.date.today()}")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--render", action="store_true", help="only write the Protocol page's table from --out's record")
    args = p.parse_args()
    if args.render:
        BOOK_TABLE.write_text(markdown(json.loads((args.out / "fp_spread.json").read_text()), args.out))
        print(f"wrote {BOOK_TABLE.relative_to(ROOT)}")
        return
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    started = time.perf_counter()
    table = []
    for name, cfg in runs(args.quick).items():
        variants = ["base", "threads2", "no_onednn", "other_isa"] + (["nchw"] if cfg.model == "conv" else [])
        values = {v: train_variant(cfg, v) for v in variants}
        for v in variants[1:]:
            change = {m: abs(values[v][m] / values["base"][m] - 1) if values["base"][m] else
                      abs(values[v][m]) for m in values["base"]}
            table.append({"run": name, "variant": v, "base": values["base"], "value": values[v], "change": change})
            print(f"{name:<24} {v:<10} " + "  ".join(f"{m} {c:.2e}" for m, c in change.items()), flush=True)
    spread = {m: max((row["change"].get(m, 0.0) for row in table), default=0.0) for m in METRICS}
    out = {"machine": machine(), "quick": args.quick, "seconds": round(time.perf_counter() - started, 1),
           "metrics": list(METRICS), "spread": spread, "runs": table}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fp_spread.json").write_text(json.dumps(out, indent=1) + "\n")
    BOOK_TABLE.write_text(markdown(out, args.out))
    print(f"wrote {BOOK_TABLE.relative_to(ROOT)}")
    print("relative spread per metric: " + ", ".join(f"{m} {v:.2e}" for m, v in spread.items()))
    print(f"wrote {args.out / 'fp_spread.json'}")


if __name__ == "__main__":
    main()
