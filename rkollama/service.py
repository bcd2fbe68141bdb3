"""The systemd unit that runs `rkollama serve` as a service (written by `install.sh --systemd`).

`python -m rkollama.service --exec PATH [--user U] [--groups G…] [--pin-frequencies]` prints it.
The sandbox is as tight as the NPU allows: no PrivateDevices (the runtime needs /dev/rknpu or
/dev/dri/renderD*), no MemoryDenyWriteExecute (ctypes callbacks, which the RKLLM engine is
driven by, live in writable+executable pages), /sys readable (platform and driver detection).
"""

import argparse
import grp
import os
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR = Path("/var/lib/rkollama")
ENV_FILE = Path("/etc/rkollama/rkollama.env")
NPU_DEVICES = ("/dev/rknpu", "/dev/dri/renderD128", "/dev/dri/renderD129")
"""Device nodes of Rockchip's NPU: the vendor driver's, or the DRM render nodes it uses."""
NOFILE = 102400
"""Open files: Rockchip's RKLLM demos raise it to this (`ulimit -HSn 102400`), and every client
connection is one more."""


@dataclass
class Unit:
    exec_path: str
    user: str = "rkollama"
    groups: list[str] = field(default_factory=list)
    state_dir: Path = STATE_DIR
    env_file: Path = ENV_FILE
    pin_frequencies: bool = False

    def text(self) -> str:
        pin = (f"ExecStartPre=+{self.exec_path} doctor --pin-frequencies\n" if self.pin_frequencies else
               f"# ExecStartPre=+{self.exec_path} doctor --pin-frequencies  (Rockchip's fixed clocks; "
               "runs as root)\n")
        groups = f"SupplementaryGroups={' '.join(self.groups)}\n" if self.groups else ""
        return f"""[Unit]
Description=rkollama, an Ollama-compatible server for Rockchip NPUs and the CPU
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User={self.user}
Group={self.user}
{groups}EnvironmentFile=-{self.env_file}
Environment=HOME={self.state_dir}
Environment=RKOLLAMA_MODELS={self.state_dir}/models
{pin}ExecStart={self.exec_path} serve
Restart=on-failure
RestartSec=3
# SIGTERM to the daemon only: it drains its answers and ends its runner processes itself.
KillMode=mixed
TimeoutStopSec=30
LimitNOFILE={NOFILE}
StandardOutput=journal
StandardError=journal
SyslogIdentifier=rkollama
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths={self.state_dir}
ProtectHome=true
PrivateTmp=true
ProtectControlGroups=true
RestrictSUIDSGID=true
LockPersonality=true

[Install]
WantedBy=multi-user.target
"""


def device_groups(devices: tuple[str, ...] = NPU_DEVICES) -> list[str]:
    """The groups that own the NPU's device nodes on this machine (render, video, …)."""
    names: list[str] = []
    for device in devices:
        try:
            name = grp.getgrgid(os.stat(device).st_gid).gr_name
        except (OSError, KeyError):
            continue
        if name != "root" and name not in names:
            names.append(name)
    return names


def parse(text: str) -> dict[str, list[str]]:
    """A unit's `Key=value` lines, every value of each key in order (sections merged)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rkollama.service", description=__doc__.splitlines()[0])
    parser.add_argument("--exec", dest="exec_path", required=True, help="path of the rkollama program")
    parser.add_argument("--user", default="rkollama")
    parser.add_argument("--groups", nargs="*", help="supplementary groups (default: the NPU devices' groups)")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    parser.add_argument("--env-file", type=Path, default=ENV_FILE)
    parser.add_argument("--pin-frequencies", action="store_true")
    args = parser.parse_args(argv)
    groups = device_groups() if args.groups is None else args.groups
    print(Unit(args.exec_path, args.user, groups, args.state_dir, args.env_file,
               args.pin_frequencies).text(), end="")


if __name__ == "__main__":
    main()
