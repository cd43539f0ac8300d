"""Cost of `python -m pipelines.report` as the number of prediction rows grows.

    PYTHONPATH=$PWD python benchmarks/rereport_cost.py [--rows 50000 200000]

For each count, writes a synthetic finished run (predictions.csv of BreakHis-named rows with
fixed-length paths, and its summary.json) into a temporary folder, then runs the report's
command line on it in a child process and prints its wall time, CPU time and peak RSS, and the
CPU time per row of the launcher's row check alone (every row parsed once before the job
starts). The images do not exist: the gallery skips them, as it does for moved images.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

from pipelines.launch.report_checks import check_rows
from pipelines.runs.scored_runs import read_scored_run
from pipelines.scoring.csv_output import csv_line
from pipelines.scoring.rows import PREDICTION_COLUMNS, scored_image


def write_run(folder: str, rows: int) -> None:
    """A finished run of `rows` predictions with spread scores, threshold 0.5."""
    rng = random.Random(0)
    os.makedirs(folder)
    with open(os.path.join(folder, "predictions.csv"), "w") as handle:
        handle.write(",".join(PREDICTION_COLUMNS) + "\n")
        for index in range(rows):
            slide, sequence = divmod(index, 1000)
            name = f"SOB_M_DC-14-{slide:05d}-40-{sequence:03d}"
            path = f"/absent/BreaKHis_v1/SOB_M_DC_14-{slide:05d}/40X/{name}.png"
            row = scored_image(
                path,
                rng.random(),
                0.5,
                f"{folder}/heatmaps/{name}-0123456789abcdef.png",
                heatmap_peak=rng.random(),
            )
            handle.write(csv_line(row) + "\n")
    summary = {"model_id": "benchmark", "threshold": 0.5, "scored": rows, "run_id": "benchmark"}
    with open(os.path.join(folder, "summary.json"), "w") as handle:
        json.dump(summary, handle)


def main() -> None:
    """Write each run, time the report over it, print a table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[50000, 200000])
    args = parser.parse_args()
    print("rows | wall s | CPU s | peak RSS MB | launcher check, CPU us per row")
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as scratch:
            run = os.path.join(scratch, "run")
            write_run(run, rows)
            started = time.process_time()
            check_rows([read_scored_run(run, "--predictions")])
            check_us = 1e6 * (time.process_time() - started) / rows
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            command = [sys.executable, "-m", "pipelines.report", "--predictions", run]
            command += ["--output_dir", os.path.join(scratch, "report")]
            subprocess.run(command, check=True, capture_output=True)
            wall = time.perf_counter() - started
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
            # ru_maxrss of children: the largest child so far (the runs only grow).
            print(
                f"{rows} | {wall:.1f} | {cpu:.1f} | {usage.ru_maxrss / 1024:.0f} | {check_us:.1f}"
            )


if __name__ == "__main__":
    main()
