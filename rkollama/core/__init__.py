"""Engine-neutral request and event types; imports nothing from Flask, typer, rich or ctypes."""
