"""Which platform's model sources to use: a Rockchip SoC from the device tree, or `cpu`."""

from pathlib import Path

# Device-tree compatible strings -> platform names used by Modelfile sources.
_SOCS = (("rockchip,rk3588", "rk3588"), ("rockchip,rk3576", "rk3576"),
         ("rockchip,rk3562", "rk3562"), ("rockchip,rv1126b", "rv1126b"))

# Platforms whose NPU engine rkollama can drive today. The NPU engine arrives in a later release;
# until then every board uses the CPU engine and its `cpu` sources.
NPU_ENGINE_PLATFORMS: tuple[str, ...] = ()


def detect_soc(root: Path = Path("/proc/device-tree")) -> str:
    """The SoC from `<root>/compatible` (NUL-separated), or `cpu` when it is not a known Rockchip."""
    try:
        compatible = (root / "compatible").read_bytes().decode("ascii", "replace").lower()
    except OSError:
        return "cpu"
    for marker, name in _SOCS:
        if marker in compatible:
            return name
    return "cpu"


def source_platform(setting: str) -> str:
    """Platform whose Modelfile sources are pulled: the override, else the SoC if its engine exists."""
    if setting and setting != "auto":
        return setting
    soc = detect_soc()
    return soc if soc in NPU_ENGINE_PLATFORMS else "cpu"
