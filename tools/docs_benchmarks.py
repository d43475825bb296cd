"""The benchmark-results section: the newest record of each benchmark under benchmarks/ (bench_*.json),
one table per benchmark, each row naming its file, machine, commit and load."""
import glob
import json
import os


def _records(root, pattern):
    """The newest record per file name stem (date stripped), oldest stems first."""
    newest = {}
    for path in sorted(glob.glob(os.path.join(root, "benchmarks", pattern))):
        newest[os.path.basename(path).rsplit("_", 1)[0]] = path
    records = []
    for path in newest.values():
        with open(path) as fh:
            records.append((os.path.relpath(path, root), json.load(fh)))
    return records


def _source(path, record):
    load = record.get("load_average_1min") or 0
    return f"`{path}` ({record['device']}, git {record['git_sha'][:7]}, load {load:.1f})"


def _rate(value):
    return f"{value:,.3g}" if value < 1000 else f"{value:.2e}"


def _dtw_pass(config):
    """The timed pass of a DTW record (records before the bwd pass hold a ``backward`` flag)."""
    return config.get("pass") or ("fwd+bwd" if config.get("backward") else "fwd")


def _dtw_groups(record):
    """{(pairs, n, m): {implementation: row}}; older records hold one size and pairs in their config."""
    cfg, groups = record["config"], {}
    for row in record["rows"]:
        key = (row.get("pairs", cfg["pairs"]), row.get("n", cfg.get("n")), row.get("m", cfg.get("m")))
        groups.setdefault(key, {})[row["implementation"]] = row
    return groups


def _dtw_cell(name, row):
    if not row.get("pairs_per_s"):
        return "—"
    # Records before issue #23 timed pysdtw's SoftDTW module (its wrapper); later ones its forward kernel alone.
    wrapper = name == "pysdtw" and "kernel alone" not in row.get("note", "")
    return _rate(row["pairs_per_s"]) + (" (its wrapper)" if wrapper else "")


def _dtw_table(records):
    if not records:
        return []
    names = list(dict.fromkeys(r["implementation"] for _, record in records for r in record["rows"]))
    lines = ["**DTW** (`m3net bench-dtw`): pairs/s per implementation; the Triton rows' % of the bandwidth floor of "
             "the timed pass (`m3net.bench.dtw.floor_bytes_per_pair`: 260 B per pair forward, 516 B backward, 776 B "
             "forward + backward at 8×8 fp32) against the GPU's datasheet bandwidth", "",
             "| mode | pass | pairs | T | " + " | ".join(names) + " | triton % of floor | source |",
             "|---|---|---|---|" + "---|" * (len(names) + 2)]
    for path, record in records:
        cfg = record["config"]
        for (pairs, n, m), rows in _dtw_groups(record).items():
            cells = [_dtw_cell(name, rows.get(name, {})) for name in names]
            floor = rows.get("triton", {}).get("pct_of_floor")
            lines.append(f"| {cfg['mode']} | {_dtw_pass(cfg)} | {pairs} | {n}×{m} | " + " | ".join(cells)
                         + f" | {f'{floor:.0f}%' if floor else '—'} | {_source(path, record)} |")
    return lines + [""]


def _matcher_table(records):
    if not records:
        return []
    lines = ["**DTW matchers end to end** (`m3net bench-dtw --matchers`, forward): pairs/s and time over one plain "
             "`dtw` forward of the same pairs", "", "| T | pairs | call | pairs/s | × plain fwd | source |",
             "|---|---|---|---|---|---|"]
    for path, record in records:
        for row in record["rows"]:
            rate = _rate(row["pairs_per_s"]) if row.get("pairs_per_s") else "—"
            ratio = f"{row['x_plain_fwd']:.2f}" if row.get("x_plain_fwd") else "—"
            lines.append(f"| {row['n']} | {row['pairs']} | {row['implementation']} | {rate} | {ratio} | "
                         f"{_source(path, record)} |")
    return lines + [""]


def render_benchmarks(root):
    """Markdown tables of the committed CPU/GPU benchmark records under benchmarks/ (without markers)."""
    lines = []
    dtw = _records(root, "bench_dtw_*.json")
    lines += _dtw_table([(path, r) for path, r in dtw if r["benchmark"] == "dtw"])
    lines += _matcher_table([(path, r) for path, r in dtw if r["benchmark"] == "dtw_matchers"])
    for pattern, title, columns in (
            ("bench_extract_*.json", "**Extraction** (`m3net bench-extract`)",
             (("stage", "stage", str), ("clips/s", "clips_per_s", "{:.2f}".format),
              ("frames/s", "frames_per_s", "{:.1f}".format), ("% of backbone", "pct_of_backbone", "{:.0f}".format))),
            ("bench_train_*.json", "**Head stage** (`m3net bench-train`, 5-way 1-shot)",
             (("phase", "phase", str), ("queries/class", "queries_per_class", str),
              ("episodes/s", "episodes_per_s", "{:.2f}".format))),
            ("bench_finetune_*.json", "**Finetune** (`m3net bench-finetune`, decoding excluded)",
             (("shot", "shot", str), ("checkpointing", "checkpointing", str), ("images", "images_per_episode", str),
              ("episodes/s", "episodes_per_s", "{:.3f}".format), ("peak GPU MiB", "peak_gpu_mib", str))),
            ("bench_input_*.json", "**Finetune input path** (`m3net bench-input`, one core: finetune's episode "
             "reader on the same episodes from mp4 clips and from `m3net frames` folders)",
             (("source", "source", str), ("resolution", "resolution", str), ("frames/clip", "clip_frames", str),
              ("mp4 frames/s", "mp4_frames_per_s", "{:.1f}".format),
              ("frame folders frames/s", "frames_frames_per_s", "{:.1f}".format), ("×", "speedup", "{:.1f}".format),
              ("`m3net frames` frames/s", "decode_once_frames_per_s", "{:.1f}".format),
              ("KiB/frame", "jpeg_bytes_per_frame", lambda b: f"{b / 1024:.1f}"),
              ("mean abs diff (grey levels)", "mean_abs_pixel_diff", "{:.2f}".format))),
            ("bench_predict_*.json", "**Prediction** (`m3net bench-predict`: `m3net.FewShotClassifier`, what "
             "`m3net predict` runs, with the support set fitted once)",
             (("stage", "stage", str), ("clips", "clips", str), ("clips/s", "clips_per_s", "{:.2f}".format))),
            ("bench_residency_*.json", "**Feature residency** (`m3net bench-residency`)",
             (("features", "residency", str), ("cache GiB", "cache_gib", str),
              ("limit GiB", "memory_limit_gib", str), ("train ep/s", "train_episodes_per_s", "{:.2f}".format),
              ("vs memory", "train_vs_memory", "{:.0%}".format),
              ("evaluate ep/s incl. load", "eval_episodes_per_s_incl_load", "{:.2f}".format),
              ("vs memory", "eval_vs_memory", "{:.0%}".format)))):
        records = _records(root, pattern)
        if not records:
            continue
        lines += [title, "", "| what | " + " | ".join(c[0] for c in columns) + " | source |",
                  "|---|" + "---|" * (len(columns) + 1)]
        for path, record in records:
            what = record["config"].get("head", record["benchmark"])
            options = record["config"].get("head_options") or {}
            what += "".join(f" {k}={v}" for k, v in options.items())
            for row in record["rows"]:
                cells = [fmt(row[key]) if row.get(key) not in (None, "") else "—" for _, key, fmt in columns]
                lines.append(f"| {what} | " + " | ".join(cells) + f" | {_source(path, record)} |")
        lines.append("")
    return "\n".join(lines).rstrip()
