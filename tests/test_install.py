"""`pip install pruning_lib` brings the library, not the course.

The core dependencies hold torch, torchvision and what the library's own modules import; the notebooks' tools
(JupyterLab, widgets, matplotlib, papermill, ...) are the `course` extra, which `dev` (what make installs) includes.
Every library module (all of pruning_lib except course/, plots/, widgets/, exercises/) imports with the course's
tools made unimportable.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pruning_lib"
COURSE_PACKAGES = ("course", "plots", "widgets", "exercises")  # pruning_lib.<these> may use the course's tools
COURSE_TOOLS = {"matplotlib", "ipython", "ipywidgets", "ipykernel", "jupyterlab", "nbformat", "nbconvert", "papermill"}
BLOCKED_MODULES = ("matplotlib", "IPython", "ipywidgets", "ipykernel", "jupyterlab", "nbformat", "nbconvert", "papermill")
# Library modules that import a course tool when imported (not ours to fix here; each one says who and why).
KNOWN_EXCEPTIONS: set[str] = set()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings, normalised (PEP 503): {"torch", "pruning-lib", ...}."""
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r).group()).lower() for r in requirements}


def library_modules() -> dict[str, Path]:
    """Every module of the library, dotted name -> file, found on disk (folders without ``__init__`` count too)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if len(parts) == 1 or parts[1] not in COURSE_PACKAGES:
            modules[".".join(parts)] = path
    return modules


def test_course_tools_are_an_extra_that_dev_includes():
    project = _pyproject()["project"]
    core = _names(project["dependencies"])
    assert not core & COURSE_TOOLS, f"course tools in the core dependencies: {sorted(core & COURSE_TOOLS)}"
    assert {"torch", "torchvision"} <= core
    extras = project["optional-dependencies"]
    assert COURSE_TOOLS - {"ipython"} <= _names(extras["course"])
    dev_self = [r for r in extras["dev"] if _names([r]) == {"pruning-lib"}]
    assert len(dev_self) == 1, "dev should pull the other extras with one pruning_lib[...] line"
    assert {"course", "deploy", "openvino"} <= set(re.search(r"\[(.*)\]", dev_self[0]).group(1).split(","))


def test_library_imports_only_core_dependencies():
    """Each third-party import in a library module belongs to a core dependency (a nested one may be deploy's)."""
    project = _pyproject()["project"]
    core = _names(project["dependencies"])
    runtimes = core | _names(project["optional-dependencies"]["deploy"] + project["optional-dependencies"]["openvino"])
    dists = packages_distributions()
    wrong = []
    for name, path in library_modules().items():
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                if root in sys.stdlib_module_names or root in ("pruning_lib", "__future__"):
                    continue
                allowed = core if id(node) in top_level else runtimes
                if not _names(dists.get(root, [root])) & allowed:
                    wrong.append(f"{name}:{node.lineno} imports {root} ({dists.get(root, '?')})")
    assert not wrong, "library imports outside the core dependencies:\n" + "\n".join(wrong)


_IMPORT_ALL = """
import importlib, importlib.abc, json, sys
BLOCKED, MODULES = set(sys.argv[1].split(",")), sys.argv[2].split(",")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is a course tool (blocked: pip install pruning_lib does not bring it)")
        return None

sys.meta_path.insert(0, Block())
failed = {}
for name in MODULES:
    try:
        importlib.import_module(name)
    except Exception as e:
        failed[name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
"""


def test_library_imports_without_course_tools():
    modules = [m for m in library_modules() if m not in KNOWN_EXCEPTIONS]
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, ",".join(BLOCKED_MODULES), ",".join(modules)],
        capture_output=True, text=True, cwd=ROOT, timeout=1800,     # a hang bound (it takes seconds)
    )
    assert out.returncode == 0, out.stderr
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert not failed, "library modules that fail to import without the course's tools:\n" + "\n".join(
        f"  {m}: {e}" for m, e in failed.items())
