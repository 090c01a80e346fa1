"""The rows of the measurements beside the workloads: the sensor tick, the stack, the Celery workers."""

from __future__ import annotations

from report import SENSOR_FILES, SENSOR_TARGET_S, row, stats_text, times, verdict


def sensor_row(sensor: dict) -> dict:
    target = f"<= {SENSOR_TARGET_S:.0f} s"
    if not sensor.get("implemented"):
        return row(
            f"dataset_version_sensor, one tick over {SENSOR_FILES} files",
            ours="not implemented yet",
            target=target,
            verdict="MISS",
            workload="sensor",
        )
    worst = sensor.get("max_tick_seconds")
    ticks = ", ".join(f"{t['tick']} {t['seconds']:.3f}" for t in sensor.get("ticks", []))
    return row(
        f"dataset_version_sensor over {SENSOR_FILES} files, slowest of 3 ticks (s: {ticks or 'failed'})",
        ours=f"{worst:.3f}" if worst is not None else "error",
        target=target,
        verdict=verdict(worst is not None and worst <= SENSOR_TARGET_S),
        workload="sensor",
    )


def stack_row(benches: dict) -> dict:
    """Small on the embedded default (baseline column) and on a local stack (ours column), pytest-benchmark's stats."""
    stats = {s: benches[s]["stats"] if s in benches else None for s in ("embedded", "stack")}
    emb, prod = (stats[s]["median"] if stats[s] else None for s in ("embedded", "stack"))
    info = next(iter(benches.values()))["extra_info"]
    return row(
        "small, `experiments-dagster run`: embedded default (baseline column) vs the production profile on a "
        f"local stack (ours column), wall s median of {stats['stack']['rounds'] if stats['stack'] else 0}; "
        f"stack start {info.get('stack_start_seconds', 0):.0f} s, not counted",
        stats_text(stats["embedded"]) if emb is not None else "error",
        stats_text(stats["stack"]) if prod is not None else "error",
        times(prod, emb),
        "- (what the server costs)",
        verdict="-" if emb and prod else "MISS",
        workload="stack",
    )


def workers_rows(doc: dict) -> list[dict]:
    """The 'workers' rows: backfill throughput and search wall time, 1 worker against 2."""
    eph = doc.get("experiments_per_hour") or {}
    one, two = eph.get("1"), eph.get("2")
    runs = [m for m in doc.get("backfill", []) if m.get("workers") in (1, 2)]
    ok = sum(1 for m in runs for s in m.get("statuses", []) if s == "SUCCESS")
    total = sum(m.get("versions", 0) for m in runs)
    noise = [m["foreign_cpu_share"] for m in runs if m.get("foreign_cpu_share") is not None]
    rows = [
        {
            "workload": "workers",
            "measure": f"backfill of {doc.get('versions', '?')} small versions on a local stack, experiments/hour "
            "(launch to last run end): 1 Celery worker (baseline column) vs 2 (ours column); "
            f"runs SUCCESS {ok}/{total}; others used {max(noise):.0%} of the CPUs at most"
            if noise
            else "backfill on a local stack, experiments/hour: 1 vs 2 Celery workers",
            "baseline": f"{one:.0f}" if one else "error",
            "ours": f"{two:.0f}" if two else "error",
            "ratio": f"{two / one:.2f}x" if one and two else "-",
            "target": "- (2 cores; see README)",
            "verdict": "-" if one and two and ok == total else "MISS",
        }
    ]
    status = doc.get("search_status", "not measured")
    sw = doc.get("search_wall_seconds") or {}
    s1, s2 = sw.get("1"), sw.get("2")
    measured = status == "measured"
    rows.append(
        {
            "workload": "",
            "measure": f"search of {doc.get('trials', '?')} trials, `experiments-dagster run` wall s: "
            "search.workers 1 (baseline column) vs 2 (ours column)" + ("" if measured else f": {status}"),
            "baseline": (f"{s1:.1f}" if s1 else "error") if measured else "n/a",
            "ours": (f"{s2:.1f}" if s2 else "error") if measured else "n/a",
            "ratio": f"{s2 / s1:.2f}x" if s1 and s2 else "-",
            "target": "-",
            "verdict": "-",
        }
    )
    ps = doc.get("per_step") or {}
    pe = doc.get("per_experiment") or {}
    if ps.get("steps_measured"):
        rows.append(
            {
                "workload": "",
                "measure": f"per step (event log, {ps['steps_measured']} steps): median step s; queue wait s "
                "(submitted -> STEP_START); steps and Celery task s per experiment",
                "baseline": "",
                "ours": f"{ps['step_seconds_median']:.2f}; {ps['queue_wait_seconds_median']:.2f}; "
                f"{ps['steps_per_experiment']:.0f}; {pe.get('celery_task_seconds') or 0:.0f}",
                "ratio": "-",
                "target": "-",
                "verdict": "-",
            }
        )
    return rows
