"""A benchmark killed by a signal (as `timeout` kills it: SIGTERM) stops the run-api it started,
checked by PID."""

import signal
import subprocess
import sys
import time

from recipe.atropos.tests.helpers.launcher_helpers import ROOT, alive, descendants


def test_bench_data_path_killed_by_sigterm_stops_its_run_api(tmp_path):
    log = open(tmp_path / "bench.log", "wb")  # noqa: SIM115
    bench = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "bench_data_path.py"), "--sizes", "256x4096",
                              "--repeats", "1", "--naive-repeats", "1"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    seen = {}
    deadline = time.monotonic() + 300
    while not seen:  # its run-api is up
        assert bench.poll() is None, (tmp_path / "bench.log").read_text()[-2000:]
        assert time.monotonic() < deadline
        seen.update(descendants(bench.pid))
        time.sleep(0.2)
    time.sleep(1.0)
    seen.update(descendants(bench.pid))
    bench.send_signal(signal.SIGTERM)
    code = bench.wait(timeout=120)
    log.close()
    assert code == 128 + signal.SIGTERM, (tmp_path / "bench.log").read_text()[-2000:]
    time.sleep(0.5)
    assert alive(seen) == []
