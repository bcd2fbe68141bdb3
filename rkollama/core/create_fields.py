"""The grammar of Ollama's newer model fields (`REQUIRES`, `RENDERER`, `PARSER` in a Modelfile;
`requires`, `renderer`, `parser` in `/api/create`), checked where a Modelfile is parsed and again
where the daemon stores what a client sent."""

import re

from rkollama.errors import BadRequest

_NUMBER = r"(?:0|[1-9][0-9]*)"
_PRERELEASE = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(rf"v{_NUMBER}(?:\.{_NUMBER}(?:\.{_NUMBER}"
                     rf"(?:-{_PRERELEASE}(?:\.{_PRERELEASE})*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?)?)?")
"""Go's golang.org/x/mod/semver, which Ollama checks REQUIRES with: `v1`, `v1.2` and `v1.2.3`,
a pre-release and build only after all three numbers, no leading zeros."""
BUILTIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A built-in renderer's or parser's name (`qwen3-coder`, `harmony`, `deepseek3.1`)."""


def requires_version(text: object) -> str:
    """REQUIRES' minimum Ollama version, without the `v` Ollama allows before it; BadRequest with
    Ollama's words for anything that is not a semantic version."""
    version = text.strip() if isinstance(text, str) else ""
    version = version if version.startswith("v") else f"v{version}"
    if len(version) > 64 or not _SEMVER.fullmatch(version):
        raise BadRequest("requires must be a valid semver (e.g. 0.14.0)")
    return version[1:]


def builtin_name(field: str, text: object) -> str:
    """A renderer's or parser's name (`field` says which), checked against BUILTIN_NAME."""
    if not isinstance(text, str) or not BUILTIN_NAME.fullmatch(text):
        raise BadRequest(f"{field} must be a name of letters, digits, '.', '_' and '-' (at most 64)")
    return text


FIELDS = ("renderer", "parser", "requires")
"""The fields, in the order Ollama writes them."""


def checked(field: str, value: object) -> str:
    """`value` of one of FIELDS, checked by that field's grammar (requires without its `v`)."""
    return requires_version(value) if field == "requires" else builtin_name(field, value)
