"""The tables of docs/benchmarks.md, from the result files of one mode.

    python -m bench.report [--mode quick|full]
"""

from __future__ import annotations

import argparse

import orjson

from bench.harness import RESULTS, ratio
from bench.throughput import throughput_ratios

__all__ = ["tables"]


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def _shape(per_message: int) -> str:
    return "1 event / message" if per_message == 1 else f"{per_message} events / message"


def tables(mode: str) -> str:
    out: list[str] = []
    throughput = _load(f"throughput-{mode}")
    if throughput:
        versions = ", ".join(f"{k} {v}" for k, v in throughput["versions"].items() if v)
        # The Kafka Streams runs carry their own versions (Kafka Streams, Java).
        jvm = sorted({f"{k} {v}" for run in throughput["runs"] for k, v in run.get("versions", {}).items() if v})
        if jvm:
            versions += f"; Kafka Streams app: {', '.join(jvm)}"
        machine = throughput["machine"]
        out += [f"Measured {throughput['date']} ({mode} mode) on {machine['cpu']}, {machine['cores']} cores, "
                f"{machine['memory_gib']} GiB (load average at start {machine['load_average_at_start']}); {versions}.", ""]
        out += ["| data | competitor | workload | guarantee | events | events/s | events/CPU-s | peak RSS (MB) |",
                "|---|---|---|---|---|---|---|---|"]
        for run in throughput["runs"]:
            head = f"| {_shape(run['events_per_message'])} | {run['competitor']} | {run['workload']} | {run['guarantee']} | "
            if run.get("skipped"):
                out.append(head + f"{run['events']:,} | skipped: {run['skipped']} | | |")
                continue
            out.append(head + f"{run['events']:,} | {run['events_per_s']:,.0f} | "
                       f"{run['events_per_cpu_s']:,.0f} | {run['peak_rss_mb']:,.0f} |")
        ratios = throughput_ratios(throughput["runs"])
        lo_stream = [r for r in ratios if any(v is not None for k, v in r.items() if k.startswith(("lo_stream", "per_cpu_lo")))]
        if lo_stream:
            out += ["", "| data | guarantee | lo_stream / raw | lo_stream / Quix | lo_stream / Kafka Streams | "
                    "per CPU-s: / raw | / Quix | / Kafka Streams |", "|---|---|---|---|---|---|---|---|"]
            for r in lo_stream:
                out.append(f"| {_shape(r['events_per_message'])} | {r['guarantee']} | {r['lo_stream_over_raw']} | "
                           f"{r['lo_stream_over_quix']} | {r['lo_stream_over_kstreams']} | {r['per_cpu_lo_stream_over_raw']} | "
                           f"{r['per_cpu_lo_stream_over_quix']} | {r['per_cpu_lo_stream_over_kstreams']} |")
        out += _own_ratios(throughput["runs"])
        others = [r for r in ratios if any(r[k] is not None for k in ("quix_over_raw", "kstreams_over_raw"))]
        if others:
            out += ["", "| data | guarantee | Quix / raw | Kafka Streams / raw | per CPU-s: Quix / raw | Kafka Streams / raw |",
                    "|---|---|---|---|---|---|"]
            for r in others:
                out.append(f"| {_shape(r['events_per_message'])} | {r['guarantee']} | {r['quix_over_raw']} | "
                           f"{r['kstreams_over_raw']} | {r['per_cpu_quix_over_raw']} | {r['per_cpu_kstreams_over_raw']} |")
        out.append("")
    scale = _load(f"scale-{mode}")
    if scale:
        out += ["| students | competitor | events | events/s | events/CPU-s | peak RSS (MB) |", "|---|---|---|---|---|---|"]
        for run in scale["runs"]:
            head = f"| {run['students']:,} | {run['competitor']} | {run['events']:,} | "
            if run.get("skipped"):
                out.append(head + f"skipped: {run['skipped']} | | |")
                continue
            out.append(head + f"{run['events_per_s']:,.0f} | {run['events_per_cpu_s']:,.0f} | {run['peak_rss_mb']:,.0f} |")
        out += ["", "| competitor | slowest / fastest events per CPU-s across S |", "|---|---|"]
        out += [f"| {competitor} | {flat} |" for competitor, flat in scale["slowest_over_fastest"].items()]
        out.append("")
    latencies = sorted((RESULTS.glob("gateway_query_latency-*.json")), key=lambda p: float(p.stem.rsplit("-", 1)[1]))
    if latencies:
        out += ["| date | rate (events/s) | sent (events/s) | events sent | seen | p50 (ms) | p90 | p99 | max |",
                "|---|---|---|---|---|---|---|---|---|"]
        for path in latencies:
            r = orjson.loads(path.read_bytes())
            ms = r["latency_ms"]
            sent = f"{r['sent_events_per_s']:,.0f}" if "sent_events_per_s" in r else "not recorded"
            out.append(f"| {r['date']} | {r['rate_events_per_s']:,.0f} | {sent} | {r['events']:,} | {r['events_seen']:,} | "
                       f"{ms['p50']:,} | {ms['p90']:,} | {ms['p99']:,} | {ms['max']:,} |")
        out.append("")
    soaks = sorted(RESULTS.glob("soak-*.json"), key=lambda p: float(p.stem.split("-")[1].rstrip("s")))
    if soaks:
        out += ["| date | seconds | events/s | good events | counted exactly (students) | hostile frames | refused as "
                "expected | gateway RSS start → end (MB) | worker RSS start → end (MB) |", "|---|---|---|---|---|---|---|---|---|"]
        for path in soaks:
            r = orjson.loads(path.read_bytes())
            memory = {name: f"{m['start']} → {m['end']}" for name, m in r["rss_mb"].items()}
            out.append(f"| {r['date']} | {r['seconds']:g} | {r['rate_events_per_s']:g} | {r['good_events']:,} | "
                       f"{r['students_counted_exactly']} of {r['students']} | {r['hostile_frames']:,} | "
                       f"{r['hostile_answered_as_expected']:,} | {memory['gateway']} | {memory['worker']} |")
        out.append("")
    gateway = _load(f"gateway-{mode}")
    if gateway:
        g = gateway["gateway"]
        out += [f"Gateway: {g['events_per_s']:,} events/s acknowledged ({g['connections']} websockets, "
                f"{g['seconds']:g} s, window {g['window']}); gateway CPU {g['gateway_cpu_s']} s, "
                f"peak RSS {g['gateway_peak_rss_mb']} MB.", ""]
    return "\n".join(out)


def _own_ratios(runs: list[dict]) -> list[str]:
    """lo_stream against itself and the floor, per data shape: exactly-once over at-least-once
    (workshop), and the `writing` module over the raw loop's workshop rate; events per CPU-second.

    >>> runs = [{"competitor": c, "workload": w, "guarantee": g, "events_per_message": 1, "events_per_cpu_s": s}
    ...         for c, w, g, s in (("raw", "workshop", "at_least_once", 100.0), ("lo_stream", "workshop", "at_least_once", 80.0),
    ...                            ("lo_stream", "workshop", "exactly_once", 60.0), ("lo_stream", "writing", "at_least_once", 30.0))]
    >>> _own_ratios(runs)[-1]
    '| 1 event / message | 0.75 | 0.3 |'
    """

    def rate(competitor: str, workload: str, guarantee: str, per_message: int) -> float | None:
        return next((r["events_per_cpu_s"] for r in runs if not r.get("skipped") and r["competitor"] == competitor
                     and r["workload"] == workload and r["guarantee"] == guarantee
                     and r["events_per_message"] == per_message), None)

    rows = []
    for per_message in sorted({r["events_per_message"] for r in runs}):
        at_least_once = rate("lo_stream", "workshop", "at_least_once", per_message)
        exactly_once = ratio(rate("lo_stream", "workshop", "exactly_once", per_message), at_least_once)
        writing = ratio(rate("lo_stream", "writing", "at_least_once", per_message),
                        rate("raw", "workshop", "at_least_once", per_message))
        if exactly_once is not None or writing is not None:
            rows.append(f"| {_shape(per_message)} | {exactly_once} | {writing} |")
    if not rows:
        return []
    return ["", "| data | per CPU-s: lo_stream exactly-once / at-least-once | lo_stream `writing` / raw workshop |",
            "|---|---|---|", *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("quick", "full"), default="quick")
    print(tables(parser.parse_args().mode))


if __name__ == "__main__":
    main()
