"""The catalogue of known models: YAML family files in the user's and the built-in directories."""

import logging
import sys
from pathlib import Path

from rkollama.errors import ModelfileError, ModelNotFound
from rkollama.models.modelfile import Family, Modelfile, load_family
from rkollama.models.names import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelName

log = logging.getLogger("rkollama.catalog")


def builtin_dir() -> Path:
    """modelfiles/ beside the package (source checkout) or under `<prefix>/share/rkollama`."""
    here = Path(__file__).resolve().parents[2] / "modelfiles"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "rkollama" / "modelfiles"


class Catalog:
    def __init__(self, extra_dir: str = ""):
        self.dirs = [Path(extra_dir)] if extra_dir else []
        self.dirs.append(builtin_dir())

    def families(self) -> list[Family]:
        """Every valid family file, the first directory winning on a name clash. An invalid file
        is skipped with a warning that names it and its fault: it never hides the others."""
        seen: dict[str, Family] = {}
        for directory in self.dirs:
            for path in sorted(directory.glob("*.y*ml")) if directory.is_dir() else []:
                try:
                    family = load_family(path)
                except ModelfileError as exc:
                    log.warning("skipping the Modelfile %s: %s", path, exc.message)
                    continue
                seen.setdefault(family.name.lower(), family)
        return list(seen.values())

    def offered(self, platform: str) -> list[tuple[str, Modelfile]]:
        """("family:tag", Modelfile) for every tag with a source for `platform`, each family's
        default tag first."""
        out = []
        for family in self.families():
            default = family.default_tag()
            for tag in [default] + [t for t in family.data["tags"] if t != default]:
                entry = family.entry(str(tag), platform)
                if entry is not None:
                    out.append((f"{family.name}:{tag}", entry))
        return out

    def find(self, name: ModelName, platform: str) -> Modelfile:
        """The flattened Modelfile for `name` on `platform`; ModelNotFound if the catalogue lacks it."""
        if (name.host, name.namespace) == (DEFAULT_HOST, DEFAULT_NAMESPACE):
            for family in self.families():
                if family.name.lower() == name.model.lower():
                    entry = family.entry(name.tag, platform)
                    if entry is not None:
                        return entry
        raise ModelNotFound("pull model manifest: file does not exist")
