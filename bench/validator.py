"""Benchmark: what request validation costs, proto rules against hand-written.

The rules of a monitor body used to be Python (core/monitors/validation.py
before the contract-fidelity issue); they are now buf.validate annotations in
monitors.proto, checked by protovalidate. The baseline is that old module,
loaded from git history in this run, so both are measured on this machine:

  - hand-written: merge + the old validate() (what CreateMonitor ran)
  - proto rules: the pipeline's check of the request, then merge + the new
    validate() (cron, time zone, expectedStatus and the target policy; a
    patch also checks the merged monitor against the proto's rules again)

for one CreateMonitor body and for a bulk create of 100. Prints microseconds
per call and the ratio to the baseline.

    python -m bench.validator [--calls 2000] [--baseline-rev da44fba]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf import json_format
from observe.v1 import monitors_pb2

from core.errors import Violations
from core.monitors import validation
from core.rpc.validator import VALIDATOR

ROOT = Path(__file__).resolve().parent.parent
BODY = {
    "name": "homepage",
    "type": "keyword",
    "url": "https://example.com/health",
    "intervalSec": 60,
    "timeoutMs": 5000,
    "method": "GET",
    "headers": {"Authorization": "Bearer x", "X-Env": "prod"},
    "expectedStatus": [200, 204],
    "keyword": "ok",
    "tags": ["prod", "web", "eu-west"],
    "failureThreshold": 3,
    "alertEmail": "ops@example.com",
    "alertSlackUrl": "https://hooks.slack.com/services/T0BENCH01/B0BENCH01/benchmarkbody0000000000",
}


def load_baseline(rev: str) -> ModuleType | None:
    """The hand-written validation module as it was at ``rev``."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:core/monitors/validation.py"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp(prefix="observe-bench-")) / "old_validation.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_validation", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def request(count: int) -> Any:
    item = json_format.ParseDict(
        {**BODY, "type": "MONITOR_TYPE_KEYWORD"}, monitors_pb2.MonitorInput(), ignore_unknown_fields=False
    )
    if count == 1:
        return monitors_pb2.CreateMonitorRequest(monitor=item)
    return monitors_pb2.BulkCreateMonitorsRequest(monitors=[item] * count)


def items(req: Any) -> list[monitors_pb2.MonitorInput]:
    return [req.monitor] if isinstance(req, monitors_pb2.CreateMonitorRequest) else list(req.monitors)


def hand_written(old: ModuleType) -> Callable[[Any], None]:
    def run(req: Any) -> None:
        v = Violations()
        for i, item in enumerate(items(req)):
            merged = old.merge(None, old.present_fields(item), v, f"monitors[{i}].")
            old.validate(merged, v, f"monitors[{i}].", allow_private=False)
        assert not v, v.items

    return run


def proto_rules(req: Any) -> None:
    VALIDATOR.check_request(req, "monitor" if isinstance(req, monitors_pb2.CreateMonitorRequest) else "*")
    v = Violations()
    for i, item in enumerate(items(req)):
        merged = validation.merge(None, validation.present_fields(item))
        validation.validate(merged, v, f"monitors[{i}].", allow_private=False, patched=False)
    assert not v, v.items


def timed(fn: Callable[[Any], None], req: Any, calls: int) -> float:
    for _ in range(max(10, calls // 20)):
        fn(req)
    start = time.perf_counter()
    for _ in range(calls):
        fn(req)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--baseline-rev", default="da44fba")
    args = parser.parse_args()
    old = load_baseline(args.baseline_rev)
    if old is None:
        print(f"baseline {args.baseline_rev} not in git history here: proto rules only", file=sys.stderr)
    print(f"{'case':<22} {'hand-written µs':>16} {'proto rules µs':>15} {'ratio':>7}")
    cases = (("CreateMonitor", 1, args.calls), ("bulk create of 100", 100, max(20, args.calls // 50)))
    for label, count, calls in cases:
        req = request(count)
        new = timed(proto_rules, req, calls)
        base = timed(hand_written(old), req, calls) if old is not None else float("nan")
        print(f"{label:<22} {base:>16.1f} {new:>15.1f} {new / base:>6.2f}x")


if __name__ == "__main__":
    main()
