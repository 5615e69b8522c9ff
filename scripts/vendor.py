"""Copy the email designer's JavaScript from node_modules into emails/static/emails/vendor/, and
build the workflow builder's bundle (React Flow, React, dagre) into workflows/static/workflows/.

Run by `make vendor` after `npm ci`. The copies are committed (as Django admin vendors its
JavaScript), so running Timonier needs neither npm nor the internet. Each package lands in
`<name>-<version>/` with its licence files and a VENDORED.txt naming the source files and their
SHA-256. Standard library only.

The one change made to a copy: the trailing `sourceMappingURL` comment is dropped, because the
source maps are not vendored and Django's manifest storage would fail `collectstatic` on a
reference to a missing file.

The workflow builder is JSX (workflows/frontend/), so it is bundled with esbuild (pinned in
package.json) into one IIFE script and its CSS; BUNDLED.txt beside them lists every npm package the
bundle contains (read from esbuild's metafile, so it cannot drift) and `licences/` holds their licences.
"""

import hashlib
import json
import re
import shutil
import subprocess
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


BUILDER_ENTRY = ROOT / "workflows" / "frontend" / "builder.jsx"
BUILDER_TARGET = ROOT / "workflows" / "static" / "workflows"
# Packages that carry another package's code inside their own dist file (dagre bundles graphlib).
PREBUNDLED = {"@dagrejs/dagre": ["@dagrejs/graphlib"]}
PACKAGE_IN_PATH = re.compile(r"node_modules/((?:@[^/]+/)?[^/]+)/")


def build_workflow_builder() -> Path:
    """esbuild workflows/frontend/builder.jsx into builder.js + builder.css, with the licences."""
    esbuild = NODE_MODULES / ".bin" / "esbuild"
    installed, pinned = version("esbuild"), pinned_versions().get("esbuild")
    if installed != pinned:
        raise SystemExit(f"esbuild: package.json pins {pinned!r} but node_modules has {installed}; run npm ci")
    metafile = BUILDER_TARGET / "builder.meta.json"
    command = [
        str(esbuild),
        str(BUILDER_ENTRY),
        "--bundle",
        "--minify",
        "--format=iife",
        "--jsx=automatic",
        "--target=es2020",
        "--define:process.env.NODE_ENV=\"production\"",
        # The licences travel as files in licences/ (below), not as comments in the bundle.
        "--legal-comments=none",
        f"--outfile={BUILDER_TARGET / 'builder.js'}",
        f"--metafile={metafile}",
    ]
    subprocess.run(command, check=True, cwd=ROOT)
    inputs = json.loads(metafile.read_text())["inputs"]
    metafile.unlink()
    packages = sorted({match.group(1) for name in inputs if (match := PACKAGE_IN_PATH.search(name))})
    packages += sorted(inner for package in packages for inner in PREBUNDLED.get(package, []))
    licences = BUILDER_TARGET / "licences"
    if licences.exists():
        shutil.rmtree(licences)
    lines = [
        "builder.js and builder.css: workflows/frontend/*.jsx bundled by scripts/vendor.py with esbuild "
        f"{installed}; the npm packages inside (package-lock.json), with their licences in licences/:",
        "",
    ]
    for package in packages:
        for licence in LICENCE_NAMES:
            source = NODE_MODULES / package / licence
            if source.exists():
                name = f"{package.replace('/', '__')}-{version(package)}.{licence}"
                digest = copy(source, licences / name)
                lines.append(f"{package} {version(package)}  licences/{name}  sha256 {digest}")
                break
        else:
            raise SystemExit(f"{package}: no licence file found")
    (BUILDER_TARGET / "BUNDLED.txt").write_text("\n".join(lines) + "\n")
    return BUILDER_TARGET / "builder.js"


def main() -> int:
    if not NODE_MODULES.is_dir():
        print("node_modules/ is missing: run `npm ci` first", file=sys.stderr)
        return 1
    for package, (files, bundled) in PACKAGES.items():
        print(f"Vendored {vendor(package, files, bundled).relative_to(ROOT)}")
    print(f"Built {build_workflow_builder().relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
