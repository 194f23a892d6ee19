"""Report what a Python environment holds of the worker's requirements, as one JSON object on
stdout. Run by path under the interpreter to check (any Python 3.8 or newer, stdlib only):

    python probe.py requirements.txt

Every requirement is looked up, so the report names all missing distributions at once.
Also importable: `blender_dff.worker.environment` shares the requirements parser.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from importlib import metadata

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_MARKER = re.compile(r"""python_version\s*(<=|>=|==|!=|<|>)\s*["'](\d+(?:\.\d+)*)["']""")
_COMPARE = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def marker_applies(marker: str, python_version: tuple[int, ...]) -> bool:
    """Evaluate `python_version OP "X.Y"` clauses joined by `and` for `python_version`
    (a (major, minor) tuple); anything else is refused, as `packaging` is not at hand."""
    for clause in marker.split(" and "):
        match = _MARKER.fullmatch(clause.strip())
        if match is None:
            raise ValueError(f"unsupported environment marker '{marker}': only python_version "
                             "comparisons joined by 'and' are understood")
        operator, version = match.groups()
        if not _COMPARE[operator](tuple(python_version), _version_tuple(version)):
            return False
    return True


def parse_requirements(text: str) -> list[tuple[str, str, str]]:
    """(name, requirement, marker) for each line of a requirements file; the requirement is
    the line without its comment, the marker what follows ';' ("" when none)."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*", "", raw).strip()
        if not line:
            continue
        name = _NAME.match(line)
        if line.startswith("-") or name is None:
            raise ValueError(f"line {number} '{raw.strip()}': only plain requirements "
                             "(name, version, python_version marker) are understood")
        found.append((name.group(0), line, line.partition(";")[2].strip()))
    return found


def applicable_requirements(text: str,
                            python_version: tuple[int, ...] | None = None) -> list[tuple[str, str]]:
    """(name, requirement) for the lines whose marker holds for `python_version`
    (default: this Python's)."""
    python_version = python_version or sys.version_info[:2]
    return [(name, line) for name, line, marker in parse_requirements(text)
            if not marker or marker_applies(marker, python_version)]


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None. Older Pythons do not normalise
    '-' and '_' in names, so both spellings are tried."""
    for candidate in dict.fromkeys((name, name.replace("-", "_"), name.replace("_", "-"))):
        try:
            return metadata.version(candidate)
        except metadata.PackageNotFoundError:
            continue
    return None


def torch_report() -> dict:
    """torch's version and the device the worker would train on."""
    # torch may print while importing; stdout carries only the report.
    with contextlib.redirect_stdout(sys.stderr):
        import torch

        report = {"version": torch.__version__, "device": "cpu", "device_name": "", "memory_gib": 0.0}
        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            report.update(device="cuda", device_name=properties.name,
                          memory_gib=round(properties.total_memory / 2**30, 1))
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            report.update(device="mps")
    return report


def probe(requirements_path: str) -> dict:
    with open(requirements_path, encoding="utf-8") as handle:
        requirements = applicable_requirements(handle.read())
    report = {
        "python_version": ".".join(str(part) for part in sys.version_info[:3]),
        "executable": sys.executable,
        "distributions": [{"name": name, "requirement": line, "installed": installed_version(name)}
                          for name, line in requirements],
        "torch": None,
        "torch_error": "",
    }
    if any(name == "torch" for name, _ in requirements) and installed_version("torch"):
        try:
            report["torch"] = torch_report()
        except Exception as exc:  # noqa: BLE001 -- a broken torch is what the probe reports
            report["torch_error"] = f"{type(exc).__name__}: {exc}"
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python probe.py REQUIREMENTS_FILE\n")
        return 2
    try:
        report = probe(argv[1])
    except (OSError, ValueError) as exc:
        report = {"error": f"cannot read the requirements '{argv[1]}': {exc}"}
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
