"""``make fuzz``: every target (``targets.py``) under atheris until it has run ``--runs`` inputs.

A finding (uncaught exception, failed bound, hang past ``-timeout``, RSS past the limit) stops
libFuzzer; its input is kept under ``--findings`` and the target restarts for the remaining
runs, so the total is reached either way. Progress lines go to ``--log``; totals and rates per
target to ``--results`` (JSON) and stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.fuzz.targets import TARGETS, CChunkStreamReader

_PROGRESS = re.compile(rb"^#(\d+)\s")
_ARTIFACT = re.compile(rb"Test unit written to (\S+)")


def fuzz_one(name: str, runs: int, findings: Path, log: Path, nice: int) -> dict[str, object]:
    done, seconds, found, restarts = 0, 0.0, [], 0
    while done < runs and restarts < 50:
        cmd = [
            "nice", "-n", str(nice), sys.executable, "-m", "tests.fuzz.atheris_target", name,
            f"-runs={runs - done}", "-timeout=10", "-rss_limit_mb=512", "-malloc_limit_mb=512",
            f"-artifact_prefix={findings}/{name}-", f"-seed={restarts + 1}", "-print_final_stats=1",
            # Outcomes are coarse: reducing would swap the recorded seeds for the shortest input
            # of the same outcome (a 2.6 kB WHIP offer became a few bytes), so keep them whole.
            "-reduce_inputs=0",
        ]  # fmt: skip
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        executed, tail = 0, []
        with log.open("ab") as out:
            for line in proc.stderr:
                if line.startswith(b"INFO: Instrumenting"):
                    continue
                if (m := _PROGRESS.match(line)) is not None:
                    executed = int(m.group(1))
                elif b"number_of_executed_units" in line:
                    executed = int(line.split(b":")[-1])
                if (m := _ARTIFACT.search(line)) is not None:
                    found.append(m.group(1).decode())
                tail = [*tail[-40:], line]
                out.write(f"[{name}] ".encode() + line)
        proc.wait()
        seconds += time.monotonic() - start
        done += executed
        if proc.returncode != 0:
            restarts += 1
            if not found or executed == 0:  # not a finding we could keep: stop, say why
                why = b"".join(tail[-5:]).decode(errors="replace")
                found.append(f"exit {proc.returncode}: {why}")
                break
    return {
        "target": name,
        "inputs": done,
        "seconds": round(seconds, 1),
        "inputs_per_s": round(done / seconds) if seconds else 0,
        "findings": found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("targets", nargs="*", default=sorted(TARGETS))
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--findings", type=Path, default=Path("build/fuzz/findings"))
    parser.add_argument("--log", type=Path, default=Path("build/fuzz/fuzz.log"))
    parser.add_argument("--results", type=Path, default=Path("build/fuzz/results.json"))
    parser.add_argument("--nice", type=int, default=19)
    parser.add_argument("--jobs", type=int, default=2, help="targets fuzzed at once")
    args = parser.parse_args()
    args.findings.mkdir(parents=True, exist_ok=True)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    lock = threading.Lock()

    def one(name: str) -> None:
        if TARGETS[name].needs_native and CChunkStreamReader is None:
            print(f"{name}: skipped (native extension not built)", flush=True)
            return
        result = fuzz_one(name, args.runs, args.findings, args.log, args.nice)
        with lock:
            results[name] = result
            args.results.write_text(json.dumps(results, indent=1))
            print(
                f"{name}: {result['inputs']:,} inputs in {result['seconds']} s "
                f"({result['inputs_per_s']:,}/s), findings: {result['findings'] or 'none'}",
                flush=True,
            )

    # The slowest targets first, so the pool does not end on one of them alone.
    names = sorted(args.targets, key=lambda n: "session" not in n)
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, names))


if __name__ == "__main__":
    main()
