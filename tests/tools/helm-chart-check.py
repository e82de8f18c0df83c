"""Lints a Helm chart (strict) and renders it offline with helm-python-sdk, writing each
rendered template and each CRD to OUT_DIR. Exit status 1 with the lint messages when the
chart has any warning or error.

usage: python helm-chart-check.py CHART_DIR OUT_DIR [VALUES_JSON]
"""
import json
import os
import sys

import helm_python as helm


def main() -> int:
    chart_dir, out_dir, *rest = sys.argv[1:]
    values = json.loads(rest[0]) if rest else {}
    report = helm.lint(chart_dir, values or None, strict=True, kube_version="v1.35.0")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += [{"error": e} for e in report.get("errors", []) or []]
    if problems:
        print(json.dumps(problems, indent=2))
        return 1
    chart = helm.Chart.load(chart_dir)
    rendered = chart.render(values or None, name="kastell", namespace="kastell-system",
                            is_install=True)
    os.makedirs(out_dir, exist_ok=True)
    written = 0
    for path, text in sorted(rendered.items()):
        if not text.strip() or path.endswith("NOTES.txt") or path.endswith(".tpl"):
            continue
        name = path.replace("/", "_")
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
        written += 1
    for crd in chart.crds:
        name = "crd_" + os.path.basename(crd.get("name", f"{written}.yaml"))
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(crd.get("data", ""))
        written += 1
    print(f"linted and rendered {written} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
