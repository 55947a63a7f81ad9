#!/usr/bin/python3
"""bench/attach.py — how long `hotpatch -p PID attach` takes (the whole CLI process, as an
operator waits for it) and the longest pause any thread of the target saw, median of N rounds
(attach, then detach, so each round starts from an agent that does not serve; the first round
loads the library, the others restart it — both are reported).

  bench/attach.py BUILD_DIR [ROUNDS]

Targets: `sleep 600` (one thread in clock_nanosleep) and attach_target with 16 threads, 8 of
them in a tight malloc loop (a busy program on this 2-core machine).
Goal (issue 12): attach under 50 ms, pause under 5 ms.
"""
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

build = Path(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
cli = build / "bin" / "hotpatch"


def measure(argv, name):
    target = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        first = None
        totals, pauses = [], []
        for i in range(rounds):
            start = time.perf_counter()
            run = subprocess.run([cli, "-p", str(target.pid), "--json", "attach"],
                                 capture_output=True, text=True)
            elapsed = (time.perf_counter() - start) * 1000
            if run.returncode != 0:
                print(f"{name}: attach failed: {run.stderr.strip()}")
                return
            pause = json.loads(run.stdout)["pause_ms"]
            if i == 0:
                first = (elapsed, pause)
            else:
                totals.append(elapsed)
                pauses.append(pause)
            subprocess.run([cli, "-p", str(target.pid), "detach"], capture_output=True)
        print(f"{name:<34} first attach {first[0]:6.1f} ms (pause {first[1]:5.2f} ms); "
              f"again, median of {len(totals)}: {statistics.median(totals):6.1f} ms "
              f"(pause {statistics.median(pauses):5.2f} ms, max {max(pauses):5.2f} ms)")
    finally:
        target.kill()
        target.wait()


print("attach (whole CLI process) and the longest pause of any target thread:")
measure(["sleep", "600"], "sleep 600")
measure([build / "bin" / "attach_target", "--threads", "8", "--malloc", "8"],
        "16 threads, 8 in malloc loops")
