"""Environment processes on a named Ray node (launcher/node_processes.py), on a real local Ray: started
there by a pinned actor, stopped by PID, their exit codes reported, and gone when the launcher that
owns them is killed outright (Ray ends its actors; the process gets SIGTERM on its actor's death).
The two-node test (e2e/test_two_nodes_on_cpu.py) runs an environment this way on another node."""

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import ray

from recipe.atropos.launcher.node_processes import NodeNotFoundError, NodeProcess, ray_node_id

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
GONE_S = 60.0  # bound on waiting for a process to vanish
EXITED_S = 60.0


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        node = next(n for n in ray.nodes() if n["Alive"])
        yield node["NodeManagerAddress"], node["NodeID"]
    finally:
        ray.shutdown()


def node_process(local_ray, tmp_path, command, name="env_probe_0") -> NodeProcess:
    address, node_id = local_ray
    return NodeProcess(name, command, node=address, node_id=node_id, log_path=tmp_path / "logs" / f"{name}.log",
                       env={"PROBE_VALUE": "from-launcher"})


def test_a_process_on_a_node_runs_there_and_is_stopped_by_pid(local_ray, tmp_path):
    process = node_process(local_ray, tmp_path, SLEEPER).start()
    child = psutil.Process(process.pid)
    assert process.running() and child.is_running()
    assert child.environ()["PROBE_VALUE"] == "from-launcher"
    assert (tmp_path / "logs" / "env_probe_0.log").exists()  # its log directory made on its node
    process.stop(timeout=10)
    assert process.alive_pids() == []
    assert not process.running() and process.returncode is not None
    assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE


def test_its_exit_code_is_reported(local_ray, tmp_path):
    process = node_process(local_ray, tmp_path, [sys.executable, "-c", "raise SystemExit(3)"]).start()
    deadline = time.monotonic() + EXITED_S
    while process.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.returncode == 3
    process.stop(timeout=5)


def test_a_node_no_live_ray_node_has_is_named(local_ray):
    with pytest.raises(NodeNotFoundError, match=r"environments\[1\]\.node=10\.255\.255\.254: no live node") as info:
        ray_node_id("10.255.255.254", "environments[1].node")
    assert local_ray[0] in str(info.value)  # the live nodes are listed


DRIVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import ray
    from recipe.atropos.launcher.node_processes import NodeProcess
    ray.init(address=sys.argv[1], log_to_driver=False)
    node = next(n for n in ray.nodes() if n["Alive"])
    process = NodeProcess("env_orphan_0", [sys.executable, "-c", "import time; time.sleep(600)"],
                          node=node["NodeManagerAddress"], node_id=node["NodeID"],
                          log_path=Path(sys.argv[2]), env={}).start()
    print("PID", process.pid, flush=True)
    time.sleep(600)
""")


def test_a_process_whose_actor_is_killed_outright_goes_with_it(local_ray, tmp_path):
    """The actor's worker killed with no chance to clean up (a crash, the OOM killer): the process on
    the node gets SIGTERM from the kernel (PDEATHSIG), not from Ray."""
    process = node_process(local_ray, tmp_path, SLEEPER).start()
    child = psutil.Process(process.pid)
    actor_worker = psutil.Process(child.ppid())
    actor_worker.kill()
    _, alive = psutil.wait_procs([child], timeout=GONE_S)
    assert alive == [], f"pid {child.pid} outlived the actor that started it"
    assert not process.running()  # its actor is gone: reported as exited
    process.stop(timeout=5)


def test_a_launcher_killed_outright_leaves_no_process_on_the_node(local_ray, tmp_path):
    gcs = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, gcs, str(tmp_path / "orphan.log")],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = driver.stdout.readline()  # bounded by the pytest timeout; the driver prints it once started
        assert line.startswith("PID "), line
        child = psutil.Process(int(line.split()[1]))
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        _, alive = psutil.wait_procs([child], timeout=GONE_S)
        assert alive == [], f"pid {child.pid} outlived the launcher that started it"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
