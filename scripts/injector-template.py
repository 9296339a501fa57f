#!/usr/bin/env python3
"""Write injector/src/injector/default-template.json from the chart (or --check it).

The packaged default is the chart's injection ConfigMap rendered with the chart's
defaults (release ``redrive`` in namespace ``redrive``), so ``python -m injector`` without
a template file injects exactly what the chart would.
tests/injector/test_admission.py::test_the_packaged_default_template_is_the_charts fails
when it is out of date.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "injector" / "src" / "injector" / "default-template.json"
KUBE_VERSION = "1.33.0"


def render(helm: Path = REPO / ".tools" / "bin" / "helm") -> str:
    out = subprocess.run(
        [str(helm), "template", "redrive", str(REPO / "charts" / "redrive"), "--namespace",
         "redrive", "--kube-version", KUBE_VERSION, "--set", "injector.enabled=true",
         "--show-only", "templates/injector.yaml"],
        check=True, capture_output=True, text=True, timeout=60).stdout
    marker = "  template.json: |\n"
    body = out[out.index(marker) + len(marker):]
    lines = []
    for line in body.splitlines():
        if not line.startswith("    "):
            break
        lines.append(line[4:])
    return json.dumps(json.loads("\n".join(lines)), indent=2, sort_keys=True) + "\n"


def main() -> int:
    text = render()
    if sys.argv[1:] == ["--check"]:
        if TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run scripts/injector-template.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
