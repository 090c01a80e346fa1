"""Per-step costs of the workers row, from the Dagster event log of the measured runs."""

from __future__ import annotations

from report import med


# --- the event log --------------------------------------------------------------------------
def step_costs(instance, run_id: str) -> dict:
    """Per step of one run: submitted, picked up by a worker, started, ended (epoch seconds)."""
    import dagster as dg

    steps: dict[str, dict] = {}
    events = instance.all_logs(run_id)
    for entry in events:
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        step = steps.setdefault(entry.step_key, {})
        kind = event.event_type
        if kind == dg.DagsterEventType.ENGINE_EVENT:
            message = event.message or ""
            if message.startswith("Submitting celery task"):
                step.setdefault("submitted", entry.timestamp)
            elif "Executing steps" in message and "celery worker" in message:
                step.setdefault("picked_up", entry.timestamp)
                meta = event.event_specific_data.metadata if event.event_specific_data else {}
                worker = meta.get("Celery worker")
                if worker is not None:
                    step["worker"] = str(getattr(worker, "value", worker)).split("@")[0]
        elif kind == dg.DagsterEventType.STEP_START:
            step.setdefault("started", entry.timestamp)
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            step["ended"] = entry.timestamp
            step["status"] = "SUCCESS" if kind == dg.DagsterEventType.STEP_SUCCESS else "FAILURE"
    step_events = sum(1 for e in events if e.step_key)
    return {"steps": steps, "events": len(events), "step_events": step_events}


def summarize_steps(per_run: list[dict]) -> dict:
    """Medians over every step of the runs given, and per-experiment sums."""
    work, queue, pickup, rebuild, handoff = [], [], [], [], []
    worker_s, busy_s, steps_n, events_n, events_per_step = [], [], [], [], []
    for run in per_run:
        steps = [s for s in run["steps"].values() if "started" in s and "ended" in s]
        steps_n.append(len(steps))
        events_n.append(run["events"])
        if steps:
            events_per_step.append(run["step_events"] / len(steps))
        worker_s.append(sum(s["ended"] - s["started"] for s in steps))
        busy_s.append(sum(s["ended"] - s.get("picked_up", s["started"]) for s in steps))
        for s in steps:
            work.append(s["ended"] - s["started"])
            if "submitted" in s:
                queue.append(s["started"] - s["submitted"])
                if "picked_up" in s:
                    pickup.append(s["picked_up"] - s["submitted"])
            if "picked_up" in s:
                rebuild.append(s["started"] - s["picked_up"])
        # Orchestration hand-off: from a step's end to the next submission in the same run.
        ends = sorted(s["ended"] for s in steps)
        for s in steps:
            if "submitted" in s:
                before = [e for e in ends if e <= s["submitted"]]
                if before:
                    handoff.append(s["submitted"] - before[-1])
    return {
        "steps_per_experiment": med(steps_n),
        "step_seconds_median": med(work),
        "queue_wait_seconds_median": med(queue),  # 'Submitting celery task' -> STEP_START
        "queue_wait_seconds_max": max(queue) if queue else None,
        # 'Submitting celery task' -> the worker's 'Executing steps' event: time in the queue plus
        # the worker's load of the job and its step plan (the first task of a worker imports the code).
        "pickup_seconds_median": med(pickup),
        "resource_init_seconds_median": med(rebuild),  # worker's 'Executing steps' -> STEP_START
        "handoff_seconds_median": med(handoff),  # latest earlier step end -> next submission
        "step_seconds_per_experiment": med(worker_s),  # sum of STEP_START -> end
        "worker_busy_seconds_per_experiment": med(busy_s),  # sum of pickup -> end
        "events_per_experiment": med(events_n),
        "step_events_per_step": med(events_per_step),
        "steps_measured": len(work),
    }


def steps_by_worker(runs: list[dict]) -> dict[str, int]:
    """How many steps each Celery worker ran."""
    counts: dict[str, int] = {}
    for run in runs:
        for step in run["steps"].values():
            if "worker" in step:
                counts[step["worker"]] = counts.get(step["worker"], 0) + 1
    return counts
