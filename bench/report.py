"""Turn the samples of scripts/bench.sh into a table, JSON and docs/performance.md.

Each figure is a median over the samples of one size and system, except the
stored bytes (one total per series) and the peak RSS figures (maxima).
"""

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict

SYSTEMS = ["raw", "podman", "hand", "ckpt"]
SYSTEM_NAMES = {"raw": "raw CRIU", "podman": "Podman", "hand": "by hand", "ckpt": "ckpt"}
PEERS = ["raw", "podman", "hand"]

DOCS_BEGIN = "<!-- bench-results:begin -->"
DOCS_END = "<!-- bench-results:end -->"

# Targets: (metric, peer, maximum ratio of ckpt to the peer, description).
RATIO_TARGETS = [
    ("freeze_ms", "raw", 1.1, "freeze at most 1.1x raw CRIU's"),
    ("stored_mib", "podman", 0.25, "bytes stored at most 25% of Podman's exports"),
    ("durable_ms", "podman", 0.5, "time to a durable checkpoint at most 0.5x Podman's"),
    ("restore_ms", "raw", 1.3, "paused restore at most 1.3x raw criu restore"),
]
RSS_LIMIT_MIB = 256
RSS_TARGET_SIZE_MIB = 1024


def load_samples(path):
    """Group sample values by (size, system, metric)."""
    samples = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            key = (int(row["size_mib"]), row["system"], row["metric"])
            samples[key].append(float(row["value"]))
    return samples


def summarize(samples):
    """Compute the figures per size and system, in ms and MiB."""
    sizes = sorted({size for size, _, _ in samples})
    results = {}
    for size in sizes:
        figures = {}
        for system in SYSTEMS:
            def median(metric, scale):
                values = samples.get((size, system, metric))
                return round(statistics.median(values) / scale, 2) if values else None

            entry = {
                "freeze_ms": median("freeze_us", 1000),
                "durable_ms": median("durable_us", 1000),
                "stored_mib": median("stored_bytes", 1024 * 1024),
                "restore_ms": median("restore_us", 1000),
                "samples": len(samples.get((size, system, "freeze_us"), [])),
            }
            if system == "ckpt":
                rss = samples.get((size, system, "peak_rss_kib"))
                entry["peak_rss_mib"] = round(max(rss) / 1024, 1) if rss else None
                daemon_rss = samples.get((size, system, "daemon_peak_rss_kib"))
                entry["daemon_peak_rss_mib"] = (
                    round(max(daemon_rss) / 1024, 1) if daemon_rss else None
                )
                entry["criu_frozen_ms"] = median("criu_frozen_us", 1000)
                entry["restore_samples"] = len(samples.get((size, system, "restore_us"), []))
            figures[system] = entry
        ratios = {}
        for metric in ["freeze_ms", "durable_ms", "stored_mib", "restore_ms"]:
            for peer in PEERS:
                ours, theirs = figures["ckpt"][metric], figures[peer][metric]
                if ours is not None and theirs:
                    ratios[f"{metric}/{peer}"] = round(ours / theirs, 3)
        results[size] = {"systems": figures, "ratios": ratios}
    return results


def evaluate_targets(results):
    """Check each performance target against the measured figures."""
    targets = []
    for size, result in results.items():
        for metric, peer, limit, description in RATIO_TARGETS:
            ratio = result["ratios"].get(f"{metric}/{peer}")
            targets.append({
                "target": description,
                "size_mib": size,
                "value": ratio,
                "limit": limit,
                "unit": "x",
                "met": None if ratio is None else ratio <= limit,
            })
    rss_sizes = [s for s in results if s >= RSS_TARGET_SIZE_MIB] or [max(results)]
    for size in rss_sizes:
        for key, who in [("peak_rss_mib", "ckpt checkpoint"), ("daemon_peak_rss_mib", "ckpt daemon")]:
            rss = results[size]["systems"]["ckpt"].get(key)
            targets.append({
                "target": f"{who} peak RSS while storing under {RSS_LIMIT_MIB} MiB (1 GiB workload)",
                "size_mib": size,
                "value": rss,
                "limit": RSS_LIMIT_MIB,
                "unit": "MiB",
                "met": None if rss is None else rss < RSS_LIMIT_MIB,
            })
    return targets


def format_value(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def format_ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def size_label(size):
    return f"{size // 1024} GiB" if size % 1024 == 0 else f"{size} MiB"


def figure_rows(result):
    """Rows of (label, values per system, ratios per peer) for one size."""
    systems, ratios = result["systems"], result["ratios"]
    rows = []
    for metric, label in [
        ("freeze_ms", "freeze seen by the app (ms)"),
        ("durable_ms", "time to durable (ms)"),
        ("stored_mib", "stored after series (MiB)"),
        ("restore_ms", "paused restore (ms)"),
    ]:
        values = [systems[s][metric] for s in SYSTEMS]
        rows.append((label, values, [ratios.get(f"{metric}/{p}") for p in PEERS]))
    rows.append(("CRIU's frozen time (ms)",
                 [None, None, None, systems["ckpt"].get("criu_frozen_ms")], [None] * 3))
    rows.append(("ckpt peak RSS (MiB)",
                 [None, None, None, systems["ckpt"].get("peak_rss_mib")], [None] * 3))
    rows.append(("daemon peak RSS (MiB)",
                 [None, None, None, systems["ckpt"].get("daemon_peak_rss_mib")], [None] * 3))
    return rows


def render_text(run, results, targets):
    header = ["", *[SYSTEM_NAMES[s] for s in SYSTEMS], *[f"ckpt/{SYSTEM_NAMES[p]}" for p in PEERS]]
    widths = [30, 10, 10, 10, 10, 14, 14, 14]
    lines = [f"{run['command']} (commit {run['commit']})"]
    for size, result in results.items():
        lines.append("")
        lines.append(f"{size_label(size)} workload: {run['checkpoints']} checkpoints at "
                     f"{run['change_pct']}% change, {run['restore_runs']} paused restores")
        lines.append("".join(h.ljust(w) if i == 0 else h.rjust(w)
                             for i, (h, w) in enumerate(zip(header, widths))))
        for label, values, ratios in figure_rows(result):
            cells = [label, *[format_value(v) for v in values], *[format_ratio(r) for r in ratios]]
            lines.append("".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))))
    lines.append("")
    lines.append("Targets")
    for target in targets:
        lines.append(f"  {target_line(target)}")
    return "\n".join(lines) + "\n"


def target_line(target):
    if target["value"] is None:
        verdict = target.get("note", "not measured")
        where = "" if target["size_mib"] is None else f" at {size_label(target['size_mib'])}"
        return f"{target['target']}{where}: {verdict}"
    if target["unit"] == "x":
        value, limit = f"{target['value']:.2f}x", f"{target['limit']:.2f}x"
    else:
        value, limit = f"{target['value']:.1f} MiB", f"{target['limit']} MiB"
    verdict = "met" if target["met"] else "MISSED"
    return f"{target['target']} at {size_label(target['size_mib'])}: {value} (limit {limit}) {verdict}"


def render_markdown(run, results, targets):
    machine = run["machine"]
    lines = [
        DOCS_BEGIN,
        f"Latest run: `{run['command']}`, commit `{run['commit']}`, "
        f"{run['started']} to {run['finished']}.",
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory']} RAM, "
        f"Linux {machine['kernel']}, CRIU {machine['criu']}, runc {machine['runc']}, "
        f"Podman {machine['podman']}.",
    ]
    header = ["", *[SYSTEM_NAMES[s] for s in SYSTEMS], *[f"ckpt / {SYSTEM_NAMES[p]}" for p in PEERS]]
    for size, result in results.items():
        lines += [
            "",
            f"### {size_label(size)} workload",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" + "---:|" * (len(header) - 1),
        ]
        for label, values, ratios in figure_rows(result):
            cells = [label, *[format_value(v) for v in values], *[format_ratio(r) for r in ratios]]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "### Targets", ""]
    lines += [f"- {target_line(t)}" for t in targets]
    lines.append(DOCS_END)
    return "\n".join(lines)


def update_docs(path, markdown):
    with open(path) as f:
        text = f.read()
    begin, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if begin < 0 or end < begin:
        sys.exit(f"report: markers {DOCS_BEGIN} and {DOCS_END} not found in {path}")
    text = text[:begin] + markdown + text[end + len(DOCS_END):]
    with open(path, "w") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", required=True, help="samples.tsv written by bench.sh")
    parser.add_argument("--run", required=True, help="run.json written by bench.sh")
    parser.add_argument("--json", required=True, help="output: results as JSON")
    parser.add_argument("--text", required=True, help="output: the table as text")
    parser.add_argument("--docs", help="docs/performance.md to update between its markers")
    args = parser.parse_args()

    with open(args.run) as f:
        run = json.load(f)
    results = summarize(load_samples(args.samples))
    if not results:
        sys.exit(f"report: no samples in {args.samples}")
    targets = evaluate_targets(results)

    with open(args.json, "w") as f:
        json.dump({"run": run, "results": {str(k): v for k, v in results.items()},
                   "targets": targets}, f, indent=2)
        f.write("\n")
    text = render_text(run, results, targets)
    with open(args.text, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    if args.docs:
        update_docs(args.docs, render_markdown(run, results, targets))


if __name__ == "__main__":
    main()
