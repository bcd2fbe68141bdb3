"""What the kernel says about memory (/proc/meminfo)."""


def available_bytes() -> int:
    """MemAvailable in bytes: what can be allocated without swapping; 0 when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
