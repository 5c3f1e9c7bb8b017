"""The benchmark's report: one Markdown table, titled with the database it ran on, and
the notes that say how it was measured."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Above this p50 over the LAN the hello-world baseline itself is sick (a stall, an
# overloaded machine): ratios to it would mean nothing, so none are printed.
BASELINE_SANE_P50_MS = 10.0

TARGETS = {
    "register_ratio": 0.30,
    "ping_ratio": 0.80,
    "p99_ms": 50.0,
    "startup_s": 10.0,
    "prune_empty_s": 1.0,
    "prune_remove_s": 2.0,
    "fleet_page_ms": 100.0,
    "rss_mb": 250.0,
}


@dataclass
class ScaleRun:
    startup_s: float = 0.0
    fleet_page_ms: float = 0.0
    fleet_page_first_ms: float = 0.0
    hosts_ms: float = 0.0
    hosts_inprocess_ms: float = 0.0
    prune_empty_s: float = 0.0
    prune_remove_s: float = 0.0
    prune_isolated: bool = True
    rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt(value: float, unit: str) -> str:
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value}"


def machine(load: str) -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        total_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {total_kb / 1024 / 1024:.0f} GiB RAM"
    return (
        f"{os.cpu_count()} CPUs ({model}){memory}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, wireguard-go; load average before the run {load}"
    )


def revision() -> str:
    """The commit measured, marked when the work tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "an unknown commit"
    return f"commit {commit}" + (" with local changes" if dirty else "")


def report(
    throughput_results: dict[str, Any] | None,
    scale_results: dict[int, list[ScaleRun]],
    *,
    database: str,
    command: str,
    reps: int,
    conditions: str,
    load: str,
) -> str:
    """The table titled with `database`, then the notes; `conditions` says how the
    throughput was driven."""
    rows: list[tuple[str, str, str, str, str, str, str]] = []

    def ok(good: bool) -> str:
        return "yes" if good else "**NO**"

    baseline_p50: dict[str, float] = {}
    sane = True
    if throughput_results:
        for kind in ("register", "ping"):
            baseline_p50[kind] = median(
                [r["p50_ms"] for r in throughput_results[f"{kind}_baseline"]]
            )
        sane = baseline_p50["register"] <= BASELINE_SANE_P50_MS
        for kind, target_ratio in (("register", "register_ratio"), ("ping", "ping_ratio")):
            mine, base = throughput_results[kind], throughput_results[f"{kind}_baseline"]
            rps, base_rps = median([r["rps"] for r in mine]), median([r["rps"] for r in base])
            ratio = rps / base_rps
            where = "over the LAN" if kind == "register" else "through the tunnel"
            errors = sum(r["errors"] for r in mine)
            label = f"{kind} throughput ({where})" + (f" — {errors:.0f} errors" if errors else "")
            rows.append(
                (
                    label,
                    fmt(rps, "req/s"),
                    fmt(base_rps, "req/s"),
                    f"{ratio:.2f}×" if sane else "withheld",
                    f"≥ {TARGETS[target_ratio]:.2f}×",
                    ok(ratio >= TARGETS[target_ratio]) if sane else "—",
                    "",
                )
            )
            if all("cpu_ms_per_request" in r for r in mine + base):
                cpu = median([r["cpu_ms_per_request"] for r in mine])
                base_cpu = median([r["cpu_ms_per_request"] for r in base])
                rows.append(
                    (
                        f"{kind} CPU of the serving process per request",
                        f"{cpu:.3f} ms",
                        f"{base_cpu:.3f} ms",
                        f"{cpu / base_cpu:.1f}×" if base_cpu else "",
                        "",
                        "",
                        "",
                    )
                )
            for pct in ("p50", "p99"):
                value = median([r[f"{pct}_ms"] for r in mine])
                base_value = median([r[f"{pct}_ms"] for r in base])
                target = f"≤ {TARGETS['p99_ms']:.0f} ms" if pct == "p99" else ""
                good = ok(value <= TARGETS["p99_ms"]) if pct == "p99" else ""
                rows.append(
                    (
                        f"{kind} latency {pct}",
                        fmt(value, "ms"),
                        fmt(base_value, "ms"),
                        f"{value / base_value:.1f}×" if base_value and sane else "",
                        target,
                        good,
                        "",
                    )
                )

    figures = (
        ("start-up, interface flushed (all peers restored)", "startup_s", "s", "startup_s"),
        ("prune pass, nothing to prune", "prune_empty_s", "s", "prune_empty_s"),
        ("prune pass removing 10%", "prune_remove_s", "s", "prune_remove_s"),
        ("fleet page GET /fleet/<f>", "fleet_page_ms", "ms", "fleet_page_ms"),
        ("fleet page, first request (cold wg status)", "fleet_page_first_ms", "ms", None),
        ("hosts file: rename ping → file updated", "hosts_ms", "ms", None),
        ("hosts file: render + write in-process", "hosts_inprocess_ms", "ms", None),
        ("peak RSS of the python process", "rss_mb", "MB", "rss_mb"),
    )
    sizes = sorted(scale_results)
    for label, attribute, unit, target_key in figures:
        values = {n: median([getattr(r, attribute) for r in scale_results[n]]) for n in sizes}
        for n in sizes:
            target, good = "", ""
            if target_key and n == 50_000:
                target = f"≤ {TARGETS[target_key]:g} {unit}"
                good = ok(values[n] <= TARGETS[target_key])
            if target_key == "prune_remove_s" and n == 50_000:
                target = "≤ 2 s (5,000)"
            factor = ""
            if n != sizes[0]:
                first = values[sizes[0]]
                factor = f"{values[n] / first:.1f}×" if first else ""
            rows.append(
                (
                    f"{label}, {n:,} clients",
                    fmt(values[n], unit),
                    "—",
                    "—",
                    target,
                    good,
                    factor,
                )
            )

    header: tuple[str, ...] = ("metric", "wg-fleet", "baseline", "ratio", "target", "met")
    if sizes:
        header += (f"{sizes[0] // 1000}k→{sizes[-1] // 1000}k" if len(sizes) > 1 else "scaling",)
    sections = " and ".join(
        (["throughput"] if throughput_results else [])
        + ([f"scale ({', '.join(f'{n:,}' for n in sizes)} clients)"] if sizes else [])
    )
    lines = [
        f"**wg-fleet benchmark on {database}**: {sections}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        # Without a scale section there is no scaling column.
        *("| " + " | ".join(row[: len(header)]) + " |" for row in rows),
    ]
    extra = [
        "",
        f"Medians of {reps} run(s)"
        + (f"; throughput at {conditions}." if throughput_results else "."),
        f"Machine: {machine(load)}.",
        f"Command: `{command}`, at {revision()}.",
    ]
    if throughput_results:
        extra.append(
            "Baseline: bench/baseline.py (hello-world FastAPI) under the plain `uvicorn` "
            "command with default settings, `uvicorn baseline:app --host 0.0.0.0 --port "
            "8001` and `--host :: --port 8001`; its own p50 is "
            f"{baseline_p50['register']:.1f} ms over the LAN and "
            f"{baseline_p50['ping']:.1f} ms through the tunnel."
        )
        if not sane:
            extra.append(
                f"**No ratios: the baseline's p50 over the LAN is {baseline_p50['register']:.1f}"
                f" ms, above {BASELINE_SANE_P50_MS:g} ms.** A baseline that slow is itself "
                "sick (a stall, or a machine too loaded to measure on), and every ratio to "
                "it would be a lie; fix that and run again."
            )
        peers = throughput_results["peers_at_end"][0]["value"]
        trimmed = [item["value"] for item in throughput_results.get("trimmed", [])]
        extra.append(
            f"The register runs (warm-ups included) left {peers:,.0f} peers on the fleet's "
            "interface; every registration in them added a new client."
            + (
                f" Before {len(trimmed)} of them the fleet, above "
                f"{throughput_results['trim']['above']:,} clients, was trimmed to its newest "
                f"{throughput_results['trim']['to']:,} (wireguard-go holds at most 65,536 "
                "peers)."
                if trimmed
                else ""
            )
        )
    if len(sizes) > 1:
        extra.append(
            f"Scaling column: the {sizes[-1] // 1000}k figure over the {sizes[0] // 1000}k one "
            f"({sizes[-1] // sizes[0]}× the clients; ≤ {sizes[-1] // sizes[0]}.0× is linear or "
            "better)."
        )
    if throughput_results and "profiles" in throughput_results:
        extra += ["", "py-spy profiles of wg-fleet (one more run each, while sampled):"]
        for text in throughput_results["profiles"].values():
            extra += ["```", text, "```"]
    return "\n".join(lines + extra)
