"""The systemd unit of `install.sh --systemd`: systemd itself accepts it, and its ExecStart line,
run with the unit's environment, environment file and user, serves and stops cleanly."""

import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from helpers import free_port, wait_for

from rkollama.service import Unit, parse

RKOLLAMA = str(Path(sys.executable).with_name("rkollama"))


def test_systemd_analyze_accepts_the_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    for pin in (False, True):
        path = tmp_path / "rkollama.service"
        user = pwd.getpwuid(os.getuid()).pw_name
        path.write_text(Unit(RKOLLAMA, user=user, groups=[], pin_frequencies=pin).text())
        done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0 and done.stderr.strip() == "", done.stderr  # it warns on stderr only


def test_the_unit_keeps_the_sandbox_the_npu_needs():
    unit = parse(Unit(RKOLLAMA, groups=["render", "video"], pin_frequencies=True).text())
    assert unit["User"] == ["rkollama"] and unit["SupplementaryGroups"] == ["render video"]
    assert unit["Restart"] == ["on-failure"] and unit["LimitNOFILE"] == ["102400"]
    assert unit["ProtectSystem"] == ["strict"] and unit["ReadWritePaths"] == ["/var/lib/rkollama"]
    assert unit["NoNewPrivileges"] == ["true"] and unit["ProtectHome"] == ["true"]
    assert unit["PrivateTmp"] == ["true"]
    assert "PrivateDevices" not in unit and "MemoryDenyWriteExecute" not in unit
    assert unit["ExecStartPre"] == [f"+{RKOLLAMA} doctor --pin-frequencies"]
    assert "ExecStartPre" not in parse(Unit(RKOLLAMA).text())  # pinning is the user's choice


def _reachable_by(user: str) -> bool:
    """Whether `user` can run this interpreter (a pyenv under /root, say, it cannot)."""
    try:
        return subprocess.run([sys.executable, "-c", "0"], user=user, timeout=30).returncode == 0
    except PermissionError:
        return False


@pytest.mark.parametrize("service_user", [False, True], ids=["as-this-user", "as-a-service-user"])
def test_exec_start_runs_as_the_unit_says(service_user):
    import tempfile

    user = pwd.getpwuid(os.getuid()).pw_name
    if service_user:
        if os.getuid() != 0:
            pytest.skip("switching to a service user needs root")
        user = "nobody"
        if not _reachable_by(user):
            pytest.skip(f"{user} cannot run {sys.executable} (an install under /opt can)")
    # pytest's tmp_path is private to its user; the service user needs its own state directory
    tmp_path = Path(tempfile.mkdtemp(prefix="rkollama-unit-"))
    tmp_path.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    if service_user:  # the service user owns only its state directory
        os.chown(state, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    env_file = tmp_path / "rkollama.env"
    port = free_port()
    env_file.write_text(f"# written by the test\nOLLAMA_HOST=127.0.0.1:{port}\nRKOLLAMA_BACKEND=fake\n")
    unit = parse(Unit(RKOLLAMA, user=user, state_dir=state, env_file=env_file).text())
    env = {"PATH": "/usr/bin:/bin"}
    for assignment in unit["Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = value
    for path in unit["EnvironmentFile"]:
        for line in Path(path.lstrip("-")).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    command = unit["ExecStart"][0].split()
    kwargs = {"user": unit["User"][0]} if service_user else {}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, **kwargs)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url, process)
        assert requests.get(f"{url}/api/tags", timeout=10).json() == {"models": []}
        assert requests.get(f"{url}/v1/health", timeout=10).json()["status"] == "ok"
        assert (state / "models").is_dir()  # the store is under the unit's state directory
        assert (state / "models").stat().st_uid == pwd.getpwnam(user).pw_uid
    finally:
        process.send_signal(signal.SIGTERM)  # what KillMode=mixed sends the main process
        output, _ = process.communicate(timeout=30)
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert process.returncode == 0, output
