"""Copy the email designer's JavaScript from node_modules into emails/static/emails/vendor/.

Run by `make vendor` after `npm ci`. The copies are committed (as Django admin vendors its
JavaScript), so running Timonier needs neither npm nor the internet. Each package lands in
`<name>-<version>/` with its licence files and a VENDORED.txt naming the source files and their
SHA-256. Standard library only.

The one change made to a copy: the trailing `sourceMappingURL` comment is dropped, because the
source maps are not vendored and Django's manifest storage would fail `collectstatic` on a
reference to a missing file.
"""

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
TARGET = ROOT / "emails" / "static" / "emails" / "vendor"

# package -> (files copied from the package, packages whose code its bundle includes)
PACKAGES = {
    "grapesjs": (["dist/grapes.min.js", "dist/css/grapes.min.css", "LICENSE"], []),
    # grapesjs-mjml's bundle includes mjml-browser (MIT): its licence travels with it.
    "grapesjs-mjml": (["dist/index.js", "LICENSE"], ["mjml-browser"]),
}
LICENCE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt")
SOURCE_MAP_COMMENT = re.compile(rb"\n?(//# sourceMappingURL=\S+|/\*# sourceMappingURL=\S+ \*/)\s*$")


def version(package: str) -> str:
    return json.loads((NODE_MODULES / package / "package.json").read_text())["version"]


def pinned_versions() -> dict[str, str]:
    manifest = json.loads((ROOT / "package.json").read_text())
    return {**manifest.get("devDependencies", {}), **manifest.get("dependencies", {})}


def copy(source: Path, destination: Path) -> str:
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if source.suffix in (".js", ".css"):
        data = SOURCE_MAP_COMMENT.sub(b"\n", data)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(data)
    return digest


def vendor(package: str, files: list[str], bundled: list[str]) -> Path:
    installed = version(package)
    pinned = pinned_versions().get(package)
    if pinned != installed:
        raise SystemExit(f"{package}: package.json pins {pinned!r} but node_modules has {installed}; run npm ci")
    directory = TARGET / f"{package}-{installed}"
    for old in TARGET.glob(f"{package}-*"):
        if old.name != directory.name and re.fullmatch(rf"{re.escape(package)}-\d[\w.+-]*", old.name):
            shutil.rmtree(old)
    if directory.exists():
        shutil.rmtree(directory)
    lines = [f"{package} {installed} from the npm registry (package-lock.json), copied by scripts/vendor.py.", ""]
    for name in files:
        digest = copy(NODE_MODULES / package / name, directory / Path(name).name)
        lines.append(f"{Path(name).name}  <- {package}/{name}  sha256 {digest}")
    for inner in bundled:
        for licence in LICENCE_NAMES:
            source = NODE_MODULES / inner / licence
            if source.exists():
                digest = copy(source, directory / f"{licence}.{inner}")
                lines.append(f"{licence}.{inner}  <- {inner}/{licence} ({inner} {version(inner)} is in the bundle)")
                break
        else:
            raise SystemExit(f"{inner}: no licence file found")
    lines += ["", "Change: the trailing sourceMappingURL comment is removed (the source maps are not vendored)."]
    (directory / "VENDORED.txt").write_text("\n".join(lines) + "\n")
    return directory


def main() -> int:
    if not NODE_MODULES.is_dir():
        print("node_modules/ is missing: run `npm ci` first", file=sys.stderr)
        return 1
    for package, (files, bundled) in PACKAGES.items():
        print(f"Vendored {vendor(package, files, bundled).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
