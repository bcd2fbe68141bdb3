"""Finding librkllmrt.so, telling which ABI family it speaks before the first real call, and
declaring its functions for that family (each prototype is quoted above its binding)."""

import ctypes
import hashlib
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from ctypes import POINTER, c_char_p, c_int, c_void_p
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rkollama.backends.rkllm import abi
from rkollama.errors import LoadFailed
from rkollama.platform import find_library

log = logging.getLogger("rkollama.rkllm")

# Git blob ids of Rockchip's official builds (fact sheet §2.2): id -> runtime version.
KNOWN_BLOBS = {
    "a026cbe60905af0ad6c07dfa2fcc339dd4b9fa10": "1.0.1", "66dfdc7c25cdca9ccf9930798118e17abf7592ff": "1.1.0",
    "bfca051375287d0f5aa754a7b8681b4ede52e259": "1.1.1", "e8f4afc38c7394beeff83003dbc772412f649a44": "1.1.2",
    "68e79327e82f675413956be615f48c62ccd0f16e": "1.1.3", "3bb8cb6172c4c06e1c622c8f8c579888378784f4": "1.1.4",
    "3f173bdf016d346690d2ccad52480efc53234b3e": "1.1.4", "d45ee9b8dcb9ef27d7dd875ce3be3d5e6dfb654d": "1.2.0",
    "d61b58e295a1e88f3c690df316bfd83eec4bd16d": "1.2.0",
    "db041c01bba5e0e8f624bb2ff50d48825dde1bfc": "1.2.1b1",
    "08dc9db1a201c0a87f596c7667d5dc98ca16a7d9": "1.2.1b1",
    "6b9439d59f2fe4bb8ef5ee2b09c102f1bf993da9": "1.2.1",
    "7025f35825e04ad75d839d10392e3c02cc88e57a": "1.2.1", "4464ccb4f167d72dbd61fe1c92b44976ed45dda5": "1.2.1",
    "8ed9cca16f8d5ad8f7cdd7d393de6561182b3395": "1.2.2", "d5953fdad6e60521f1dc696f6d638425c93ba08d": "1.2.2",
    "471639b60c2c7fdcb2c8dffd553acc8548d10c2e": "1.2.2", "0084abc34ab43359cfa9fd5d4c92ece34127dbd0": "1.2.3",
    "fe1ca6849603a770c54f82d26b826a120c79a01a": "1.2.3", "348986e7a8170ddb2c3b43e99257d2e64d9699f6": "1.2.3",
    "34167b32f99cb7ab19e21fb579fb750d96b878f1": "1.3.0", "17c9063b46168c4e7d093d6fedb097874f92d076": "1.3.0",
    "5f0bd5f39bd05263a59786733687d29e66982aa6": "1.3.0",
}
# sha256 of official builds known from public copies (issue #8): sha256 -> runtime version.
KNOWN_SHA256 = {
    "f25e9b099db08aaacd0a3ac62b4697d3951d6ae61ae41ea09f6702cfa89eb32c": "1.3.1",  # 7,674,816 B, aarch64
}
INSTALL_HINT = ("install runtime 1.3.1 (or 1.3.0, 1.2.3) from github.com/airockchip/rknn-llm "
                "(rkllm-runtime/Linux/librkllm_api/aarch64/librkllmrt.so) into external/ or /usr/lib, "
                "or set RKOLLAMA_RKLLM_LIB")


def family_of(version: str) -> str | None:
    """The ABI family of a runtime version, or None when rkollama does not support it."""
    if version in ("1.2.1", "1.2.2", "1.2.3"):
        return "1.2"
    if version == "1.3.0":
        return "1.3"
    if version == "1.3.1":
        return "1.3.1"
    return None


@dataclass(frozen=True)
class Identity:
    path: Path
    family: str
    version: str  # "" when only the family is known
    how: str      # which rung of the ladder decided


def blob_id(path: Path) -> str:
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def known_version(path: Path) -> str:
    """The version of an official build, recognised by git blob id or sha256; "" if unknown."""
    data = Path(path).read_bytes()
    by_blob = KNOWN_BLOBS.get(hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), "")
    return by_blob or KNOWN_SHA256.get(hashlib.sha256(data).hexdigest(), "")


def identify(path: Path, probe: bool = True, abi_override: str = "") -> Identity:
    """Tell the ABI family before any real call (fact sheet §2.2): file identity, exported
    symbols, the default-parameter fingerprint, and, when those disagree or are unsure, a probe
    rkllm_init in a child process that reads the version the runtime prints. Raises LoadFailed
    naming what was found and what to install. `abi_override` (RKOLLAMA_RKLLM_ABI) decides
    instead, with a warning."""
    if abi_override:
        log.warning("using the RKLLM ABI %s for %s because RKOLLAMA_RKLLM_ABI says so", abi_override, path)
        return Identity(Path(path), abi_override, "", "RKOLLAMA_RKLLM_ABI")
    version = known_version(path)
    if version:
        fam = family_of(version)
        if fam is None:
            raise LoadFailed(f"{path} is RKLLM runtime {version}, which rkollama does not support; "
                             f"{INSTALL_HINT}")
        return Identity(Path(path), fam, version, "known file")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise LoadFailed(f"cannot load {path}: {exc}") from None
    if not hasattr(lib, "rkllm_init"):
        raise LoadFailed(f"{path} is not an RKLLM runtime (no rkllm_init); {INSTALL_HINT}")
    if not hasattr(lib, "rkllm_set_function_tools"):
        found = "1.2.0" if hasattr(lib, "rkllm_set_chat_template") else "1.1.x or older"
        raise LoadFailed(f"{path} is RKLLM runtime {found} (by its exported functions), which "
                         f"rkollama does not support; {INSTALL_HINT}")
    fingerprint = default_param_family(lib)
    if fingerprint and not probe:
        return Identity(Path(path), _widest(fingerprint), "", "default parameters")
    probed = probe_version(path) if probe else ""
    fam = family_of(probed) if probed else None
    if probed and fam is None and _older_than_supported(probed):
        raise LoadFailed(f"{path} is RKLLM runtime {probed}, which rkollama does not support; {INSTALL_HINT}")
    if fam and fingerprint and not fam.startswith(fingerprint):
        raise LoadFailed(f"{path}: the runtime says {probed} but its default parameters look like "
                         f"ABI {fingerprint}; refusing to guess. {INSTALL_HINT}")
    if fam:
        return Identity(Path(path), fam, probed, "probe")
    # A release newer than rkollama knows (1.3.2, a beta) and a build that prints no version are
    # one case: the ABI its defaults show, in the newest layouts of that family.
    if fingerprint:
        found = (f"runtime {probed}, newer than rkollama knows," if probed
                 else "a runtime that names no version")
        log.warning("%s is %s: using the %s layouts its default parameters point to "
                    "(RKOLLAMA_RKLLM_ABI chooses another)", path, found, _widest(fingerprint))
        return Identity(Path(path), _widest(fingerprint), "", "default parameters")
    said = f"it says {probed}, which rkollama does not know" if probed else "no version printed"
    raise LoadFailed(f"cannot tell which RKLLM runtime {path} is ({said}, unrecognised defaults); "
                     f"set RKOLLAMA_RKLLM_ABI to 1.2, 1.3 or 1.3.1 if you know its ABI, or {INSTALL_HINT}")


def _older_than_supported(version: str) -> bool:
    """True for releases before 1.2.1 and the 1.2.1 beta (other ABIs, refused)."""
    numbers = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if not numbers:
        return False
    parts = tuple(int(n) for n in numbers.groups())
    return parts < (1, 2, 1) or (parts == (1, 2, 1) and version != "1.2.1")


def _widest(fingerprint: str) -> str:
    """The defaults tell 1.2 from 1.3 but not 1.3.0 from 1.3.1 (same RKLLMParam): use 1.3.1's
    layouts, whose single RKLLMInput is a zero-padded superset of 1.3.0's. Arrays of inputs
    (n_batch > 1) need the exact stride, so the backend refuses them without a known version."""
    return "1.3.1" if fingerprint == "1.3" else fingerprint


class _Opaque(ctypes.Structure):
    # Bigger than RKLLMParam of any release: rkllm_createDefaultParam returns the struct by value
    # into a caller buffer sized by the caller, so a 208-byte (1.2) write never overruns it.
    _fields_ = [("raw", ctypes.c_uint8 * 256)]


def default_param_bytes(lib: ctypes.CDLL) -> bytes:
    # RKLLMParam rkllm_createDefaultParam();
    fn = lib.rkllm_createDefaultParam
    fn.argtypes, fn.restype = [], _Opaque
    return bytes(fn().raw)


def default_param_family(lib: ctypes.CDLL) -> str | None:
    """ABI family from where the runtime's defaults sit (enabled_cpus_num 4, n_batch 1).

    The runtime writes its defaults into a return buffer that ctypes does not zero, so bytes it
    leaves alone are stack garbage: a family is named only when exactly one layout matches and
    its other defaults are plausible; otherwise None (the probe decides)."""
    raw = default_param_bytes(lib)
    matches = []
    for name, cpus_num, n_batch in (("1.3", 65, 72), ("1.2", 93, 100)):  # extend_param at 60 / 88
        if raw[cpus_num] == 4 and raw[n_batch] == 1:
            param = abi.family(name).RKLLMParam.from_buffer_copy(
                raw[: ctypes.sizeof(abi.family(name).RKLLMParam)])
            if 0 < param.max_context_len <= 1 << 20 and 0.0 < param.top_p <= 1.0:
                matches.append(name)
    return matches[0] if len(matches) == 1 else None


_PROBE = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
param = (ctypes.c_uint8 * 256)()
missing = b"/nonexistent/rkollama-probe.rkllm"
ctypes.memmove(param, ctypes.byref(ctypes.c_char_p(missing)), 8)
callbacks = (ctypes.c_uint8 * 64)()
handle = ctypes.c_void_p()
lib.rkllm_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
lib.rkllm_init(ctypes.byref(handle), param, callbacks)
"""


def probe_version(path: Path, timeout: float = 20.0) -> str:
    """The version printed by rkllm_init with a missing model, in a child process (a crash
    there cannot take the daemon down). "" when nothing was printed."""
    try:
        # -u: Python then makes C stdio unbuffered too, so the banner the runtime prints with
        # printf reaches the pipe even when rkllm_init crashes right after it.
        run = subprocess.run([sys.executable, "-u", "-c", _PROBE, str(path)], capture_output=True,
                             text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = re.search(r"rkllm-runtime version:\s*([0-9][0-9.a-z]*)", run.stdout + run.stderr)
    return match.group(1).rstrip(",") if match else ""


class Runtime:
    """A loaded librkllmrt.so with every function declared for its ABI family (bound in
    __init__; each returns the runtime's int status, 0 for success)."""

    rkllm_init: Callable[..., int]
    rkllm_run: Callable[..., int]
    rkllm_abort: Callable[..., int]
    rkllm_is_running: Callable[..., int]
    rkllm_destroy: Callable[..., int]
    rkllm_clear_kv_cache: Callable[..., int]
    rkllm_get_kv_cache_size: Callable[..., int]
    rkllm_set_chat_template: Callable[..., int]
    rkllm_set_function_tools: Callable[..., int]
    rkllm_load_lora: Callable[..., int]
    rkllm_load_prompt_cache: Callable[..., int]
    rkllm_release_prompt_cache: Callable[..., int]

    def __init__(self, identity: Identity):
        self.identity = identity
        self.family = abi.family(identity.family)
        self.lib = ctypes.CDLL(str(identity.path))  # CDLL: calls release the GIL
        f = self.family
        handle_p = POINTER(abi.LLMHandle)
        # int rkllm_init(LLMHandle* handle, RKLLMParam* param, LLMResultCallback callback);  (1.2)
        # int rkllm_init(LLMHandle* handle, RKLLMParam* param, RKLLMCallback* callback);      (1.3)
        third = POINTER(f.RKLLMCallback) if f.callback_struct else f.LLMResultCallback
        self._bind("rkllm_init", [handle_p, POINTER(f.RKLLMParam), third])
        # int rkllm_run(LLMHandle handle, RKLLMInput* rkllm_input, RKLLMInferParam* rkllm_infer_params,
        #               void* userdata);
        self._bind("rkllm_run", [abi.LLMHandle, POINTER(f.RKLLMInput), POINTER(f.RKLLMInferParam), c_void_p])
        # int rkllm_abort(LLMHandle handle);
        self._bind("rkllm_abort", [abi.LLMHandle])
        # int rkllm_is_running(LLMHandle handle);
        self._bind("rkllm_is_running", [abi.LLMHandle])
        # int rkllm_destroy(LLMHandle handle);
        self._bind("rkllm_destroy", [abi.LLMHandle])
        # int rkllm_clear_kv_cache(LLMHandle handle, int keep_system_prompt, int* start_pos, int* end_pos);
        # (four arguments since 1.2.1: always pass NULL, NULL, never leave them to chance)
        self._bind("rkllm_clear_kv_cache", [abi.LLMHandle, c_int, POINTER(c_int), POINTER(c_int)])
        # int rkllm_get_kv_cache_size(LLMHandle handle, int* cache_sizes);
        self._bind("rkllm_get_kv_cache_size", [abi.LLMHandle, POINTER(c_int)])
        # int rkllm_set_chat_template(LLMHandle handle, const char* system_prompt,
        #                             const char* prompt_prefix, const char* prompt_postfix);
        self._bind("rkllm_set_chat_template", [abi.LLMHandle, c_char_p, c_char_p, c_char_p])
        # int rkllm_set_function_tools(LLMHandle handle, const char* system_prompt, const char* tools,
        #                              const char* tool_response_str);
        self._bind("rkllm_set_function_tools", [abi.LLMHandle, c_char_p, c_char_p, c_char_p])
        # int rkllm_load_lora(LLMHandle handle, RKLLMLoraAdapter* lora_adapter);
        self._bind("rkllm_load_lora", [abi.LLMHandle, POINTER(f.RKLLMLoraAdapter)])
        # int rkllm_load_prompt_cache(LLMHandle handle, const char* prompt_cache_path);
        self._bind("rkllm_load_prompt_cache", [abi.LLMHandle, c_char_p])
        # int rkllm_release_prompt_cache(LLMHandle handle);
        self._bind("rkllm_release_prompt_cache", [abi.LLMHandle])

    def _bind(self, name: str, argtypes: list[Any]) -> None:
        fn = getattr(self.lib, name)
        fn.argtypes, fn.restype = argtypes, c_int
        setattr(self, name, fn)

    def default_param(self) -> Any:
        """The runtime's own defaults, read through an oversized buffer (see _Opaque), copied
        field by field into a zeroed struct: reserved bytes, padding and pointers the runtime
        may leave as garbage never reach rkllm_init. The 1.2 img_* strings point at "", as real
        builds set them."""
        cls, ext_cls = self.family.RKLLMParam, self.family.RKLLMExtendParam
        raw = default_param_bytes(self.lib)
        source = cls.from_buffer_copy(raw[: ctypes.sizeof(cls)])
        param = cls()
        pointers = ("model_path", "img_start", "img_end", "img_content")
        for name, *_ in cls._fields_:
            if name not in pointers and name != "extend_param":
                setattr(param, name, getattr(source, name))
        for name, *_ in ext_cls._fields_:
            if name != "reserved":
                setattr(param.extend_param, name, getattr(source.extend_param, name))
        for name in pointers[1:]:
            if hasattr(param, name):
                setattr(param, name, b"")
        return param


def open_runtime(setting: str = "", abi_override: str = "") -> Runtime:
    path = find_library(setting)
    if path is None:
        raise LoadFailed(f"no RKLLM runtime found; {INSTALL_HINT}")
    return Runtime(identify(path, abi_override=abi_override))

