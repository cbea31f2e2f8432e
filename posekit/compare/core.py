"""``run_compare``: every pipeline over the same images (results, accuracy, cost), the scaling sweep, the stage
study, then the report files. A pipeline that cannot be built or run is recorded with its error and the others
still run."""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from pathlib import Path

from posekit.compare.spec import CompareConfig

__all__ = ["run_compare", "machine_info"]


def machine_info() -> dict:
    """What the timings were measured on: CPU count, load averages, library versions."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        info["load_avg_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every OS
        info["load_avg_1_5_15"] = None
    for mod in ("torch", "onnxruntime", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            info[mod] = None
    return info


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _error_text(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    return f"{type(e).__name__}: {msg}"


def run_compare(cfg: CompareConfig) -> dict:
    """Run the comparison of ``cfg`` and write everything under ``cfg.out_dir``:
    ``results/<pipeline>.json``, ``compare.json``, ``compare.md``, the PNG plots and ``report.html``.

    Returns the ``compare.json`` dict.
    """
    from tqdm import tqdm

    from posekit.compare.build import build_estimator
    from posekit.compare.report import claims, write_report
    from posekit.compare.run import accuracy, cost_summary, run_on_dataset
    from posekit.evaluation.results import save_results

    out = Path(cfg.out_dir)
    (out / "results").mkdir(parents=True, exist_ok=True)
    for p, what in ((Path(cfg.annotations), "annotation file"), (Path(cfg.images), "image folder")):
        if not p.exists():
            raise FileNotFoundError(f"{what} not found: {p}")
    report: dict = {
        "meta": {"annotations": str(cfg.annotations), "images": str(cfg.images), "dataset": cfg.dataset,
                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(),
                 "warmup_images": cfg.warmup, "max_images": cfg.max_images},
        "pipelines": {}, "sweep": {}, "stages": {},
    }
    t_start = time.perf_counter()
    crops = None
    bar = tqdm(cfg.pipelines, desc="pipelines", disable=not cfg.progress, file=sys.stderr)
    for spec in bar:
        bar.set_postfix_str(spec.name)
        entry: dict = {"spec": spec.to_dict(), "status": "ok"}
        report["pipelines"][spec.name] = entry
        try:
            est = build_estimator(spec, out)
            entry["paradigm"] = spec.paradigm
            entry["card"] = est.card.name
            entry["backend"] = est.backend
            entry["threads"] = spec.threads
            run = run_on_dataset(est, spec, cfg.annotations, cfg.images, warmup=cfg.warmup,
                                 max_images=cfg.max_images, progress=cfg.progress)
            res_path = out / "results" / f"{spec.name}.json"
            save_results(run["results"], res_path)
            entry["results_file"] = str(res_path.relative_to(out))
            entry["num_results"] = len(run["results"])
            entry["accuracy"] = accuracy(cfg.annotations, res_path, run["per_image"], cfg.dataset)
            entry["cost"] = cost_summary(run["per_image"])
            entry["per_image"] = run["per_image"]
            if cfg.sweep:
                from posekit.compare.sweep import person_crops, run_sweep

                if crops is None:
                    crops = person_crops(cfg.annotations, cfg.images, max_crops=max(cfg.sweep_counts))
                report["sweep"][spec.name] = run_sweep(est, spec, crops, cfg.sweep_counts, cfg.sweep_canvas,
                                                       cfg.sweep_repeats, progress=cfg.progress,
                                                       save_dir=out if not report["sweep"] else None)
                report["sweep"][spec.name]["paradigm"] = spec.paradigm
            del est
        except Exception as e:  # noqa: BLE001 - a pipeline that cannot run is reported, the others still run
            entry["status"] = "error"
            entry["error"] = _error_text(e)
            entry["traceback"] = traceback.format_exc(limit=6)
            _log(f"posekit compare: pipeline '{spec.name}' failed: {entry['error']}", cfg.progress)
            continue
        if cfg.stages and spec.stages:
            report["stages"][spec.name] = _stage_study(spec, cfg, out)
    report["meta"]["seconds"] = time.perf_counter() - t_start
    report["meta"]["machine_after"] = {"load_avg_1_5_15": machine_info()["load_avg_1_5_15"]}
    report["claims"] = claims(report)
    write_report(report, out)
    return report


def _stage_study(spec, cfg: CompareConfig, out: Path) -> dict:
    """One row per stage t: accuracy and cost of the model stopped after stage t."""
    from posekit.compare.build import build_estimator
    from posekit.compare.run import accuracy, cost_summary, run_on_dataset
    from posekit.compare.stages import stage_specs
    from posekit.evaluation.results import save_results

    study: dict = {"status": "ok", "rows": []}
    try:
        for t, s in stage_specs(spec, out):
            est = build_estimator(s, out)
            run = run_on_dataset(est, s, cfg.annotations, cfg.images, warmup=cfg.warmup, max_images=cfg.max_images,
                                 progress=cfg.progress)
            res_path = out / "results" / f"{s.name}.json"
            save_results(run["results"], res_path)
            acc = accuracy(cfg.annotations, res_path, run["per_image"], cfg.dataset)
            cost = cost_summary(run["per_image"])
            study["rows"].append({"stage": t, "results_file": str(res_path.relative_to(out)),
                                  "AP": acc["stats"]["AP"], "AR": acc["stats"].get("AR"),
                                  "ms_median": cost["total"]["median"], "ms_p90": cost["total"]["p90"],
                                  "network_ms_median": cost["stages"]["network"]["median"],
                                  "stats": acc["stats"]})
            del est
    except Exception as e:  # noqa: BLE001
        study["status"] = "error"
        study["error"] = _error_text(e)
        _log(f"posekit compare: --stages on '{spec.name}' failed: {study['error']}", cfg.progress)
    return study
