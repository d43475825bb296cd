"""The one record writer of every benchmark: what ran (name, config, rows), where (device, versions),
on which code (git SHA) and under what load; ``python tools/docs_sections.py`` tables them in the docs."""
import csv
import datetime
import json
import os

from m3net.config import Settings, setting, settings
from m3net.runtime import device_name, git_sha, versions

# A copy of the tree sent to a device machine has no .git: the session that sends it names the commit.
GIT_SHA_ENV = "M3NET_GIT_SHA"


def provenance_sha():
    """The commit the benchmark ran on: M3NET_GIT_SHA when set, else the checkout's (runtime.git_sha)."""
    return os.environ.get(GIT_SHA_ENV) or git_sha()


@settings
class RecordSettings(Settings):
    """Where a benchmark writes its record."""

    out_dir: str = setting("benchmarks", "Where the CSV and JSON results go.", path="dir")


def benchmark_record(name, device, config, rows, **extra):
    """A benchmark result: what ran (name, config, rows), where, when and on which code."""
    return {
        "benchmark": name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device), "device_type": device.type, "cpu_numbers": device.type != "cuda",
        "git_sha": provenance_sha(), "versions": versions(),
        # Other work on the machine slows every column alike; recorded so readers can judge.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        **extra, "config": config, "rows": rows,
    }


def write_benchmark(result, out_dir, name, config_columns):
    """Writes a benchmark ``result`` (device, git_sha, versions, created, rows) as
    ``<out_dir>/bench_<name>_<device>_<date>.{json,csv}``; every CSV row repeats the provenance and
    ``config_columns`` (name -> value). Returns (csv path, json path)."""
    os.makedirs(out_dir, exist_ok=True)
    device = "".join(ch if ch.isalnum() else "-" for ch in result["device"].split("(")[0].strip()).strip("-").lower()
    base = os.path.join(out_dir, f"bench_{name}_{device}_{result['created'][:10]}")
    with open(base + ".json", "w") as fh:
        json.dump(result, fh, indent=2)
    meta = {"device": result["device"], "git_sha": result["git_sha"], "torch": result["versions"]["torch"],
            "triton": result["versions"].get("triton"), "created": result["created"], **config_columns}
    with open(base + ".csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(meta) + [k for k in result["rows"][0] if k not in meta])
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow({**meta, **row})
    return base + ".csv", base + ".json"
