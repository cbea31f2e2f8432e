"""The comparison's files: ``compare.json`` (every number), ``compare.md`` (tables), PNG plots (matplotlib) and
``report.html`` (one self-contained page: plots embedded as base64, no network access), ending with the talk's
claims, each with what was measured."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from posekit.compare.stats import CROWD_BINS, pareto_front
from posekit.data.io import write_bytes_atomic

__all__ = ["claims", "write_report", "tables", "make_plots", "PLOT_FILES"]

#: plot file -> title (only the plots that have data are written).
PLOT_FILES = {
    "time_vs_people.png": "Time per image vs people found (the annotation file's images), robust fits",
    "sweep_time_vs_people.png": "Scaling sweep: time vs people on the same canvas, fitted lines",
    "sweep_stages.png": "Scaling sweep: time per stage vs people",
    "ap_vs_time.png": "AP vs median time per image, with the Pareto front",
    "ap_by_crowd.png": "AP by crowd level (images binned by annotated people)",
    "stage_split.png": "Median time per image, split into stages",
    "stages.png": "Multi-stage: AP and time when the model stops after stage t",
}


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o):
    """NaN/inf -> None (strict JSON)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _ok(report) -> dict:
    return {n: e for n, e in report["pipelines"].items() if e.get("status") == "ok"}


def _f(v, fmt="{:.3f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v)


# ------------------------------------------------------------------------------------------------------ claims
def claims(report: dict) -> list[dict]:
    """The talk's claims about the paradigms, each with what was measured here: ``[{"claim", "measured"}]``."""
    ok = _ok(report)
    sweep = report.get("sweep", {})
    out = []

    def para(p):
        return [n for n, e in ok.items() if e.get("paradigm") == p]

    for n in para("top-down"):
        s = sweep.get(n)
        if s:
            f = s["fit_pose_part_best"]
            sc = s["single_crop"]
            m = (f"{n}: +{f['slope']:.1f} ms per person (R² {_f(f['r2'], '{:.2f}')}) over N = "
                 f"{s['counts'][0]}–{s['counts'][-1]} on one canvas; the pose network on one crop alone: "
                 f"{sc['network_ms_best']:.1f} ms (slope / single crop = {s['slope_vs_single_crop']:.2f}; best of "
                 f"{s['repeats']} repeats); threads {ok[n]['threads']}")
        else:
            f = ok[n]["cost"]["fit_total_vs_found"]
            m = (f"{n}: +{f['slope']:.1f} ms per person found (R² {_f(f['r2'], '{:.2f}')}) on the data set "
                 f"(no --sweep); threads {ok[n]['threads']}")
        out.append({"claim": "top-down: one pose-network run per person, so cost grows linearly with the number of "
                             "people", "measured": m})
        br = ok[n]["accuracy"].get("box_recall")
        if br:
            per_bin = _recall_by_crowd(ok[n]["per_image"])
            bins = ", ".join(f"{k} people: {v:.2f}" for k, v in per_bin.items())
            src = ok[n]["spec"]["boxes"]
            src = "detector" if src == "model" else ("oracle ground-truth boxes" if src == "gt" else src)
            out.append({"claim": "top-down depends on its detector, which misses people in crowds",
                        "measured": f"{n} ({src}): box recall {br['recall']:.2f} at IoU 0.5 "
                                    f"({br['matched']}/{br['total']}); by crowd level: {bins}"})
    for p, what in (("bottom-up", "association"), ("one-stage", "decoding")):
        for n in para(p):
            s = sweep.get(n)
            if s:
                d = s["fit_stages"]["decode"]
                m = (f"{n}: network flat within {100 * s['network_flat']:.1f} % (best of {s['repeats']} repeats; "
                     f"medians {100 * s['network_flat_median']:.1f} %) from {s['counts'][0]} to "
                     f"{s['counts'][-1]} people (median {s['network_ms']['median']:.1f} ms); {what} "
                     f"{d['slope']:+.2f} ms per person placed (R² {_f(d['r2'], '{:.2f}')}); people found at "
                     f"N={s['counts'][-1]}: {s['rows'][-1]['found']}; threads {ok[n]['threads']}")
            else:
                c = ok[n]["cost"]
                m = (f"{n}: network median {c['stages']['network']['median']:.1f} ms per image; {what} "
                     f"{c['fit_stages_vs_found']['decode']['slope']:+.2f} ms per person found (no --sweep)")
            claim = ("bottom-up: one forward pass whatever the number of people; association grows with the scene"
                     if p == "bottom-up" else "one-stage: one network for detection and pose, cost independent of "
                                              "the number of people")
            out.append({"claim": claim, "measured": m})
    # accuracy: bottom-up slightly less accurate than top-down; one-stage weaker in crowds
    aps = {n: e["accuracy"]["stats"]["AP"] for n, e in ok.items()}
    if para("bottom-up") and para("top-down"):
        bu = max(para("bottom-up"), key=lambda n: aps[n])
        td = max(para("top-down"), key=lambda n: aps[n])
        out.append({"claim": "bottom-up is slightly less accurate than top-down",
                    "measured": f"best bottom-up {bu} AP {aps[bu]:.3f} vs best top-down {td} AP {aps[td]:.3f} "
                                f"({'supports' if aps[bu] < aps[td] else 'does not support'} the claim on these "
                                f"images and weights)"})
    for n in para("one-stage"):
        bc = ok[n]["accuracy"]["by_crowd"]
        if len(bc) >= 2:
            out.append({"claim": "one-stage is weaker in dense crowds",
                        "measured": f"{n}: AP by crowd level " + ", ".join(f"{k}: {v['AP']:.3f}"
                                                                            for k, v in bc.items())})
    for n, st in report.get("stages", {}).items():
        rows = st.get("rows") or []
        if len(rows) >= 2:
            ms = [r["ms_median"] for r in rows]
            per = (ms[-1] - ms[0]) / (len(ms) - 1)
            aps_t = ", ".join(f"t={r['stage']}: AP {r['AP']:.3f}, {r['ms_median']:.1f} ms" for r in rows)
            out.append({"claim": "multi-stage: every extra stage refines the keypoints and costs time",
                        "measured": f"{n}: {per:+.1f} ms per extra stage; {aps_t}"})
    for n, e in report["pipelines"].items():
        if e.get("status") != "ok":
            out.append({"claim": f"pipeline {n}", "measured": f"could not run: {e.get('error')}"})
    return out


def _recall_by_crowd(per_image) -> dict:
    from posekit.compare.stats import crowd_bin

    acc: dict = {}
    for r in per_image:
        if r["recall"] is None or not r["gt_people"]:
            continue
        b = crowd_bin(r["gt_people"])
        m, t = acc.get(b, (0, 0))
        acc[b] = (m + r["recall"][0], t + r["recall"][1])
    return {lab: acc[lab][0] / acc[lab][1] for lab, _, _ in CROWD_BINS if lab in acc and acc[lab][1]}


# ------------------------------------------------------------------------------------------------------ tables
def tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """``[(title, header, rows)]``: every table of the report (markdown and HTML are made from these)."""
    ok = _ok(report)
    out = []
    keys = ["AP", "AP50", "AP75", "APm", "APl", "AR"]
    rows = []
    for n, e in report["pipelines"].items():
        if e.get("status") != "ok":
            rows.append([n, e.get("paradigm", "–"), "error"] + ["–"] * (len(keys) + 1))
            continue
        s = e["accuracy"]["stats"]
        br = e["accuracy"].get("box_recall")
        rows.append([n, e["paradigm"], e["backend"]] + [_f(s.get(k)) for k in keys]
                    + [_f(br["recall"]) if br else "–"])
    out.append(("Accuracy (the numbers of posekit evaluate on results/<pipeline>.json)",
                ["pipeline", "paradigm", "backend"] + keys + ["box recall"], rows))
    labels = [lab for lab, _, _ in CROWD_BINS]
    rows = []
    for n, e in ok.items():
        bc = e["accuracy"]["by_crowd"]
        rows.append([n] + [(f"{bc[lab]['AP']:.3f} ({bc[lab]['images']} img)" if lab in bc else "–")
                           for lab in labels])
    out.append(("AP by crowd level (images binned by their number of annotated people)", ["pipeline"] + labels,
                rows))
    if any(e["accuracy"].get("by_crowd_index") for e in ok.values()):
        cl = ["easy <0.2", "medium <0.8", "hard"]
        rows = [[n] + [_f((e["accuracy"]["by_crowd_index"].get(c) or {}).get("AP")) for c in cl]
                for n, e in ok.items()]
        out.append(("AP by CrowdPose crowd index", ["pipeline"] + cl, rows))
    rows = []
    for n, e in ok.items():
        c = e["cost"]
        f = c["fit_total_vs_found"]
        rows.append([n, str(e["threads"]), _f(c["total"]["median"], "{:.1f}"), _f(c["total"]["p90"], "{:.1f}")]
                    + [_f(c["stages"][k]["median"], "{:.1f}") for k in ("detector", "preprocess", "network",
                                                                         "decode")]
                    + [_f(f["slope"], "{:+.2f}"), _f(f["intercept"], "{:.1f}"), _f(f["r2"], "{:.2f}")])
    out.append(("Cost per image (ms, after warm-up; stage medians; robust fit of time vs people found)",
                ["pipeline", "threads", "median", "p90", "detector", "preprocess", "network", "decode/assoc",
                 "ms/person", "intercept", "R²"], rows))
    if report.get("sweep"):
        rows = []
        for n, s in report["sweep"].items():
            f = s["fit_pose_part_best"] if "single_crop" in s else s["fit_total"]
            rows.append([n, s["paradigm"]] + [_f(r["ms"], "{:.1f}") for r in s["rows"]]
                        + [_f(f["slope"], "{:+.2f}"), _f(f["r2"], "{:.2f}"),
                           "–" if "single_crop" in s else f"{100 * s['network_flat']:.1f} %",
                           _f(s.get("single_crop", {}).get("network_ms_best"), "{:.1f}"),
                           _f(s.get("slope_vs_single_crop"), "{:.2f}")])
        counts = next(iter(report["sweep"].values()))["counts"]
        out.append(("Scaling sweep: median ms per image with N people on one canvas "
                    f"({'x'.join(str(v) for v in next(iter(report['sweep'].values()))['canvas'])})",
                    ["pipeline", "paradigm"] + [f"N={c}" for c in counts]
                    + ["ms/person", "R²", "network spread", "1 crop alone", "slope/1 crop"], rows))
        # ms/person, R², spread, 1 crop: best of the repeats of every N (least disturbed by other work)
    for n, st in report.get("stages", {}).items():
        if st.get("status") != "ok":
            out.append((f"Stages of {n}", ["error"], [[st.get("error", "")]]))
            continue
        rows = [[str(r["stage"]), _f(r["AP"]), _f(r["AR"]), _f(r["ms_median"], "{:.1f}"),
                 _f(r["network_ms_median"], "{:.1f}")] for r in st["rows"]]
        out.append((f"Stages of {n}: the model stopped after stage t", ["t", "AP", "AR", "ms median",
                                                                        "network ms"], rows))
    return out


def _markdown(report: dict, plots: list[str]) -> str:
    m = report["meta"]
    mc = m["machine"]
    lines = ["# posekit compare", "",
             f"Data: `{m['annotations']}` (images `{m['images']}`). Machine: {mc['cpu_count']} CPUs, load average "
             f"{mc.get('load_avg_1_5_15')} at the start, {m.get('machine_after', {}).get('load_avg_1_5_15')} at "
             f"the end; torch {mc.get('torch')}, onnxruntime {mc.get('onnxruntime')}. Threads per pipeline are in "
             f"the cost table. Total time {m.get('seconds', float('nan')):.0f} s.", ""]
    for title, header, rows in tables(report):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{PLOT_FILES[p]}]({p})" for p in plots] + [""]
    lines += ["## The talk's claims, measured here", ""]
    lines += [f"- **{c['claim']}** — {c['measured']}" for c in report.get("claims", [])]
    return "\n".join(lines) + "\n"


def _html(report: dict, out: Path, plots: list[str]) -> str:
    m = report["meta"]
    mc = m["machine"]
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>posekit compare</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#eee}td:first-child{text-align:left}img{max-width:100%}"
             "li{margin:.4em 0}.err{color:#a00}</style></head><body>",
             "<h1>posekit compare</h1>",
             f"<p>Data: <code>{e(m['annotations'])}</code> (images <code>{e(m['images'])}</code>). Machine: "
             f"{e(str(mc['cpu_count']))} CPUs, load average {e(str(mc.get('load_avg_1_5_15')))} at the start, "
             f"{e(str(m.get('machine_after', {}).get('load_avg_1_5_15')))} at the end; torch "
             f"{e(str(mc.get('torch')))}, onnxruntime {e(str(mc.get('onnxruntime')))}. Every time is per image "
             f"after warm-up, with the thread count of the cost table.</p>"]
    errors = [(n, x) for n, x in report["pipelines"].items() if x.get("status") != "ok"]
    for n, x in errors:
        parts.append(f"<p class='err'>Pipeline <b>{e(n)}</b> could not run: {e(str(x.get('error')))}</p>")
    for i, (title, header, rows) in enumerate(tables(report)):
        parts.append(f"<h2>{e(title)}</h2><table id='table-{i}'><tr>" + "".join(f"<th>{e(h)}</th>" for h in header)
                     + "</tr>")
        for r in rows:
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
        parts.append("</table>")
    for p in plots:
        b64 = base64.b64encode((out / p).read_bytes()).decode("ascii")
        parts.append(f"<h2>{e(PLOT_FILES[p])}</h2><img alt='{e(p)}' data-file='{e(p)}' "
                     f"src='data:image/png;base64,{b64}'>")
    parts.append("<h2>The talk's claims, measured on these images</h2><ul>")
    parts += [f"<li><b>{e(c['claim'])}</b> — {e(c['measured'])}</li>" for c in report.get("claims", [])]
    parts.append("</ul></body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------------ plots
def make_plots(report: dict, out: Path) -> list[str]:
    """Write the PNG plots that have data; returns their file names (in :data:`PLOT_FILES` order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = _ok(report)
    made = []
    colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(report["pipelines"])}

    def save(fig, name):
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=110)
        plt.close(fig)
        write_bytes_atomic(out / name, png.getvalue())
        made.append(name)

    if ok:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for n, e in ok.items():
            rows = [r for r in e["per_image"] if r["timed"]]
            x = np.array([r["found"] for r in rows], float)
            y = np.array([r["ms"] for r in rows], float)
            ax.scatter(x, y, s=14, color=colors[n], alpha=0.7)
            f = e["cost"]["fit_total_vs_found"]
            xs = np.linspace(0, max(x.max() if len(x) else 1, 1), 20)
            ax.plot(xs, f["intercept"] + f["slope"] * xs, color=colors[n],
                    label=f"{n}: {f['slope']:+.1f} ms/person, R² {_f(f['r2'], '{:.2f}')}")
        ax.set_xlabel("people found in the image")
        ax.set_ylabel("ms per image (log scale)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "time_vs_people.png")
    sweep = report.get("sweep") or {}
    if sweep:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for n, s in sweep.items():
            pts = s["points"]
            ax.scatter([p["n"] for p in pts], [p["ms"] for p in pts], s=12, color=colors[n], alpha=0.6)
            f = s["fit_total"]
            xs = np.linspace(min(s["counts"]), max(s["counts"]), 30)
            ax.plot(xs, f["intercept"] + f["slope"] * xs, color=colors[n],
                    label=f"{n} ({s['paradigm']}): {f['slope']:+.1f} ms/person, R² {_f(f['r2'], '{:.2f}')}")
        ax.set_xlabel("people on the canvas (N)")
        ax.set_ylabel("ms per image (log scale)")
        ax.set_yscale("log")
        ax.set_xticks(s["counts"])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "sweep_time_vs_people.png")
        stages = ("detector", "preprocess", "network", "decode")
        fig, axes = plt.subplots(1, len(sweep), figsize=(3.6 * len(sweep), 3.6), squeeze=False)
        for ax, (n, s) in zip(axes[0], sweep.items()):
            counts = [r["n"] for r in s["rows"]]
            for k in stages:
                ax.plot(counts, [r["stages"][k] for r in s["rows"]], marker="o", label=k)
            ax.set_title(f"{n} ({s['paradigm']})", fontsize=9)
            ax.set_xlabel("people (N)")
            ax.set_ylabel("median ms")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        save(fig, "sweep_stages.png")
    if ok:
        names = list(ok)
        cost = [ok[n]["cost"]["total"]["median"] for n in names]
        ap = [ok[n]["accuracy"]["stats"]["AP"] for n in names]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (n, c, a) in enumerate(zip(names, cost, ap)):
            ax.scatter([c], [a], color=colors[n], s=40, label=f"{n} ({ok[n]['paradigm']})")
            ax.annotate(n, (c, a), fontsize=7, xytext=(4, 4 + 9 * (i % 4)), textcoords="offset points")
        front = pareto_front(cost, ap)
        ax.plot([cost[i] for i in front], [ap[i] for i in front], "k--", lw=1, drawstyle="steps-post",
                label="Pareto front")
        ax.set_xlabel("median ms per image (log scale)")
        ax.set_xscale("log")
        ax.set_ylabel("AP")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        save(fig, "ap_vs_time.png")
        labels = [lab for lab, _, _ in CROWD_BINS]
        present = [lab for lab in labels if any(lab in ok[n]["accuracy"]["by_crowd"] for n in names)]
        if present:
            fig, ax = plt.subplots(figsize=(7, 4))
            w = 0.8 / len(names)
            for i, n in enumerate(names):
                bc = ok[n]["accuracy"]["by_crowd"]
                ax.bar(np.arange(len(present)) + i * w, [max(bc.get(lab, {}).get("AP", 0.0), 0.0) for lab in present],
                       w, color=colors[n], label=n)
            ax.set_xticks(np.arange(len(present)) + 0.4 - w / 2)
            ax.set_xticklabels([f"{lab} people" for lab in present])
            ax.set_ylabel("AP")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, axis="y")
            save(fig, "ap_by_crowd.png")
        fig, ax = plt.subplots(figsize=(7, 0.6 * len(names) + 1.5))
        left = np.zeros(len(names))
        for k in ("detector", "preprocess", "network", "decode"):
            v = np.array([ok[n]["cost"]["stages"][k]["median"] for n in names])
            ax.barh(names, v, left=left, label=k)
            left += v
        ax.set_xlabel("median ms per image")
        ax.legend(fontsize=8)
        save(fig, "stage_split.png")
    st = {n: s for n, s in (report.get("stages") or {}).items() if s.get("rows")}
    if st:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax2 = ax.twinx()
        for n, s in st.items():
            t = [r["stage"] for r in s["rows"]]
            ax.plot(t, [r["AP"] for r in s["rows"]], marker="o", color=colors.get(n, "C0"), label=f"{n} AP")
            ax2.plot(t, [r["ms_median"] for r in s["rows"]], marker="s", ls="--", color=colors.get(n, "C0"),
                     label=f"{n} ms")
        ax.set_xlabel("stop after stage t")
        ax.set_xticks(sorted({r["stage"] for s in st.values() for r in s["rows"]}))
        ax.set_ylabel("AP (solid)")
        ax2.set_ylabel("median ms per image (dashed)")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "stages.png")
    return [p for p in PLOT_FILES if p in made]


def write_report(report: dict, out: str | Path) -> dict:
    """Write ``compare.json``, the plots, ``compare.md`` and ``report.html`` under ``out``; returns
    ``{"json", "md", "html", "plots"}`` paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = make_plots(report, out)
    report.setdefault("meta", {})["plots"] = plots
    write_bytes_atomic(out / "compare.json", json.dumps(_clean(report), indent=1, default=_json_default).encode())
    write_bytes_atomic(out / "compare.md", _markdown(report, plots).encode())
    write_bytes_atomic(out / "report.html", _html(report, out, plots).encode())
    return {"json": out / "compare.json", "md": out / "compare.md", "html": out / "report.html",
            "plots": [out / p for p in plots]}
