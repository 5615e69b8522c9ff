"""Compare the two Python MJML compilers on the designer's components: fidelity and speed.

PyPI `mjml` (a pure-Python port of MJML) and `mjml-python` (bindings to mrml, the Rust port)
install the same top-level package `mjml`, so each runs in its own throwaway virtualenv under
/tmp, created here on first use. Run with any Python 3.11:

    python3.11 bench/mjml_compare.py [--rounds 50]

For each component it checks that the compiler raised no error and that the HTML holds what
the component must produce (its text, its link, its image...), then times compiling the whole
document.
"""

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

COMPILERS = {
    "mjml (pure Python)": ("/tmp/timonier-bench-mjml-py", "mjml==0.12.0"),
    "mjml-python (Rust mrml)": ("/tmp/timonier-bench-mjml-rs", "mjml-python==1.4.2"),
}

# One small document per component, and what its HTML must contain to count as rendered.
COMPONENTS = {
    "section+column": (
        '<mj-section background-color="#abcdef"><mj-column width="60%"><mj-text>Sec</mj-text></mj-column>'
        '<mj-column width="40%"><mj-text>Col2</mj-text></mj-column></mj-section>',
        ["#abcdef", "Sec", "Col2", "mj-column-per-60"],
    ),
    "text": (
        '<mj-section><mj-column><mj-text color="#ff0000" font-size="18px">Hello <b>there</b></mj-text>'
        "</mj-column></mj-section>",
        ["Hello <b>there</b>", "#ff0000", "18px"],
    ),
    "image": (
        '<mj-section><mj-column><mj-image src="https://example.com/logo.png" alt="Logo" width="120px" '
        'href="https://example.com/home"/></mj-column></mj-section>',
        ['src="https://example.com/logo.png"', 'alt="Logo"', 'href="https://example.com/home"'],
    ),
    "button": (
        '<mj-section><mj-column><mj-button href="https://example.com/buy" background-color="#123456">Buy now'
        "</mj-button></mj-column></mj-section>",
        ['href="https://example.com/buy"', "Buy now", "#123456"],
    ),
    "divider": (
        '<mj-section><mj-column><mj-divider border-color="#00ff00" border-width="3px"/></mj-column></mj-section>',
        ["#00ff00", "3px"],
    ),
    "spacer": (
        '<mj-section><mj-column><mj-spacer height="42px"/></mj-column></mj-section>',
        ["42px"],
    ),
    "social": (
        '<mj-section><mj-column><mj-social mode="horizontal">'
        '<mj-social-element name="facebook" href="https://facebook.com/acme">Facebook</mj-social-element>'
        '<mj-social-element name="twitter" href="https://twitter.com/acme">Twitter</mj-social-element>'
        "</mj-social></mj-column></mj-section>",
        ["https://facebook.com/acme", "https://twitter.com/acme", "Facebook", "facebook"],
    ),
    "raw": (
        '<mj-section><mj-column><mj-raw><div class="raw-block">Raw <i>HTML</i></div></mj-raw></mj-column></mj-section>',
        ['<div class="raw-block">Raw <i>HTML</i></div>'],
    ),
    "words across a line break": (
        '<mj-section><mj-column><mj-text><a href="https://a.example">Help</a>\n  <a href="https://b.example">Write</a>'
        "</mj-text></mj-column></mj-section>",
        ["</a> <a", "</a>\n<a"],  # either keeps the words apart
    ),
    "liquid kept": (
        "<mj-section><mj-column><mj-text>Hi {{ customer.name }}, {% if customer.traits.age &gt; 30 %}x"
        "{% endif %}</mj-text></mj-column></mj-section>",
        ["{{ customer.name }}", "{% if customer.traits.age"],
    ),
}


def document(body: str) -> str:
    return (
        f"<mjml><mj-head><mj-title>T</mj-title><mj-preview>Pre</mj-preview></mj-head><mj-body>{body}</mj-body></mjml>"
    )


FULL = document("".join(source for source, _ in COMPONENTS.values()))

# Runs inside each virtualenv: compile every component and the full document, print JSON.
RUNNER = textwrap.dedent(
    """
    import json, sys, time
    import mjml
    spec = json.load(sys.stdin)
    if hasattr(mjml, "mjml_to_html"):  # the pure-Python port
        def compile(source):
            result = mjml.mjml_to_html(source)
            return result.html, list(result.errors)
    else:  # mrml
        def compile(source):
            return mjml.mjml2html(source), []
    out = {"components": {}}
    for name, (source, needles) in spec["components"].items():
        try:
            html, errors = compile(source)
        except Exception as exc:
            out["components"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
            continue
        if name == "words across a line break":  # any one of the needles will do
            missing = [] if any(n in html for n in needles) else needles
        else:
            missing = [n for n in needles if n not in html]
        out["components"][name] = {"ok": not errors and not missing, "errors": errors[:3], "missing": missing}
    compile(spec["full"])  # warm up
    start = time.perf_counter()
    for _ in range(spec["rounds"]):
        html, _errors = compile(spec["full"])
    out["ms_per_document"] = (time.perf_counter() - start) * 1000 / spec["rounds"]
    out["html_bytes"] = len(html)
    print(json.dumps(out))
    """
)


def ensure_venv(path: str, requirement: str) -> Path:
    python = Path(path) / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    spec = {
        "components": {name: (document(source), needles) for name, (source, needles) in COMPONENTS.items()},
        "full": FULL,
        "rounds": args.rounds,
    }
    results = {}
    for label, (path, requirement) in COMPILERS.items():
        python = ensure_venv(path, requirement)
        run = subprocess.run([str(python), "-c", RUNNER], input=json.dumps(spec), capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"{label} failed:\n{run.stderr}")
        results[label] = json.loads(run.stdout)

    names = list(COMPONENTS)
    labels = list(results)
    width = max(len(n) for n in names) + 2
    print(f"{'component':<{width}}" + "".join(f"{label:<28}" for label in labels))
    for name in names:
        cells = []
        for label in labels:
            r = results[label]["components"][name]
            if r["ok"]:
                cells.append("ok")
            elif "error" in r:
                cells.append("ERROR " + r["error"][:60])
            else:
                cells.append(f"missing {r['missing']} {r['errors']}"[:80])
        print(f"{name:<{width}}" + "".join(f"{c:<28}" for c in cells))
    print()
    for label in labels:
        r = results[label]
        print(f"{label}: {r['ms_per_document']:.2f} ms per full document ({r['html_bytes']} bytes of HTML)")
    fast, slow = sorted(labels, key=lambda label: results[label]["ms_per_document"])
    ratio = results[slow]["ms_per_document"] / results[fast]["ms_per_document"]
    print(f"{fast} is {ratio:.0f}x faster")


if __name__ == "__main__":
    main()
