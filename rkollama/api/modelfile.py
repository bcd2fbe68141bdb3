"""Ollama's text Modelfile (FROM, PARAMETER, TEMPLATE, SYSTEM, MESSAGE, ADAPTER, LICENSE, DRAFT,
RENDERER, PARSER, REQUIRES), parsed on the client side into Ollama's `/api/create` request, as
`ollama create` does."""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rkollama.core import create_fields
from rkollama.core.options import OPTIONS, parse_cli_value
from rkollama.errors import BadRequest
from rkollama.platform import NPU_ENGINE_PLATFORMS

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
            "parameter", "message", "requires")
_UNKNOWN = ('command must be one of "from", "license", "template", "system", "adapter", "draft", '
            '"renderer", "parser", "parameter", "message", or "requires"')
_REFUSED = {
    "adapter": "ADAPTER is not supported here; an NPU LoRA goes in a YAML Modelfile (rkollama.lora)",
    "draft": "DRAFT is not supported here: rkollama has no speculative decoding; remove the line to "
             "run the model without a draft model",
}
_LINE = re.compile(r"^\s*(\S+)\s*(.*)$", re.S)


@dataclass
class Parsed:
    """What a Modelfile asks for: the create request's fields and local files to upload."""

    body: dict[str, Any] = field(default_factory=dict[str, Any])
    uploads: list[Path] = field(default_factory=list[Path])
    """Local files FROM names (a model, and a vision model's projector in a second FROM, as
    Ollama takes one): upload them to /api/blobs, then create with `files`."""


def parse(text: str, base_dir: Path) -> Parsed:
    """The Modelfile `text` (relative paths from `base_dir`); BadRequest names the bad line."""
    parsed = Parsed()
    body = parsed.body
    parameters: dict[str, Any] = {}
    messages: list[dict[str, str]] = []
    licenses: list[str] = []
    for number, command, args in _instructions(text):
        if command == "from":
            _from(parsed, number, args, base_dir)
        elif command == "parameter":
            _parameter(parameters, args)
        elif command == "message":
            role, _, content = args.partition(" ")
            if role.lower() not in ("system", "user", "assistant"):
                raise BadRequest(f'(line {number}): message role must be one of "system", "user", '
                                 'or "assistant"')
            messages.append({"role": role.lower(), "content": _unquote(content.strip())})
        elif command == "license":
            licenses.append(_unquote(args))
        elif command in _REFUSED:
            raise BadRequest(f"(line {number}): {_REFUSED[command]}")
        else:  # template, system, renderer, parser, requires
            value = _unquote(args)
            named = command in create_fields.FIELDS
            body[command] = create_fields.checked(command, value) if named else value
    if "from" not in body and not parsed.uploads:
        raise BadRequest("no FROM line")
    if parameters:
        body["parameters"] = parameters
    if messages:
        body["messages"] = messages
    if licenses:
        body["license"] = licenses if len(licenses) > 1 else licenses[0]
    return parsed


def _from(parsed: Parsed, number: int, args: str, base_dir: Path) -> None:
    """FROM a local file (uploaded by the client) or a model name (the daemon resolves it)."""
    candidate = Path(args).expanduser()
    candidate = candidate if candidate.is_absolute() else base_dir / candidate
    if candidate.is_dir():
        raise BadRequest(f"(line {number}): FROM {args} is a directory: rkollama runs GGUF "
                         "or .rkllm files; convert the model to GGUF first")
    if candidate.is_file():
        parsed.uploads.append(candidate)
    else:
        parsed.body["from"] = args


def _parameter(parameters: dict[str, Any], args: str) -> None:
    """PARAMETER name value: typed as the option table types it; list options accumulate."""
    name, _, value = args.partition(" ")
    name = name.strip().lower()
    if name not in OPTIONS:
        raise BadRequest(f"unknown parameter '{name}'")
    typed = parse_cli_value(name, [_unquote(value.strip())])
    if OPTIONS[name].kind is list:
        parameters.setdefault(name, []).extend(typed)
    else:
        parameters[name] = typed


def parse_yaml(path: Path, name: str) -> Parsed:
    """A YAML Modelfile (modelfiles.md) as the same create request for the model `name`: the tag
    of `name` (or the file's default tag) must have a local `path` source (the file is uploaded);
    template, system, parameters, messages and license travel with it. Sources the daemon would
    download (url, hf, pypi) are catalogue entries: they are refused with where to put the file
    instead."""
    from rkollama.errors import ModelfileError
    from rkollama.models.modelfile import load_family
    from rkollama.models.names import ModelName

    try:
        tag = ModelName.parse(name).tag
    except BadRequest:
        tag = "latest"  # the daemon names the fault of the name
    try:
        family = load_family(path)
    except ModelfileError as exc:
        raise BadRequest(exc.message) from None
    wanted = tag if tag.lower() in {str(t).lower() for t in family.data["tags"]} else family.default_tag()
    entry = family.entry(str(wanted), "cpu") or next(
        (e for p in NPU_ENGINE_PLATFORMS if (e := family.entry(str(wanted), p)) is not None), None)
    if entry is None or not entry.source.path:
        raise BadRequest(f"{path}: tag {wanted} has no local `path` source; a YAML Modelfile that "
                         "downloads its model belongs in RKOLLAMA_MODELFILES, then `rkollama pull "
                         f"{family.name}:{wanted}`")
    projector = entry.source.projector
    parsed = Parsed(uploads=_local_files(path, str(wanted), entry.source.path,
                                         None if projector is None else projector.path))
    body = parsed.body
    if entry.template and entry.template != "builtin":
        body["template"] = entry.template
    for key in ("system", "license", *create_fields.FIELDS):
        if getattr(entry, key):
            body[key] = getattr(entry, key)
    if entry.parameters:
        body["parameters"] = dict(entry.parameters)
    if entry.messages:
        body["messages"] = [m.model_dump() for m in entry.messages]
    return parsed


def _local_files(path: Path, tag: str, model: str, projector: str | None) -> list[Path]:
    """The model file of a YAML entry with a `path` source, and its projector's (None: it has
    none; "": it is not a local file)."""
    if projector == "":
        raise BadRequest(f"{path}: the projector of tag {tag} has no local `path`")
    files = [Path(model)] + ([Path(projector)] if projector else [])
    for file in files:
        if not file.is_file():
            raise BadRequest(f"{path}: the source file {file} does not exist")
    return files


def _instructions(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, command, argument) per instruction; `\"\"\"` strings may span lines."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:  # cannot happen for a non-blank line; kept for the type checker
            raise BadRequest(f"(line {number}): {_UNKNOWN}")
        command, args = match.group(1).lower(), match.group(2).strip()
        if command not in COMMANDS:
            raise BadRequest(f"(line {number}): {_UNKNOWN}")
        if '"""' in args and args.count('"""') == 1:
            block = [args]
            while index < len(lines):
                block.append(lines[index])
                index += 1
                if '"""' in lines[index - 1]:
                    break
            else:
                raise BadRequest(f'(line {number}): unterminated """ string')
            args = "\n".join(block)
        yield number, command, args


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"""') and value.endswith('"""') and len(value) >= 6:
        return value[3:-3].strip("\n")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value
