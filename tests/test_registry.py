"""What the Comfy Registry and ComfyUI-Manager read from the pack: pyproject metadata, the icon, the
requirements, and code that their scans reject (eval/exec, pip or shell commands at run time)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME = [ROOT / "__init__.py", *sorted((ROOT / "nodes").rglob("*.py")), *sorted((ROOT / "face2scene_core").rglob("*.py"))]


def test_project_metadata_is_registry_ready():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert project["license"] == "Apache-2.0" and (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "comfyui" not in project["name"].lower()  # the registry's node id; "ComfyUI" in it is discouraged
    assert project["urls"]["Repository"].endswith("/ComfyUI-Face2Scene")
    assert {"PublisherId", "DisplayName", "Icon"} <= set(comfy) and all(comfy[k] for k in ("PublisherId", "DisplayName"))
    icon = re.fullmatch(r"https://raw\.githubusercontent\.com/[^/]+/ComfyUI-Face2Scene/main/(.+)", comfy["Icon"])
    assert icon, f"Icon must be a raw URL of a file of this repository, got {comfy['Icon']}"
    with Image.open(ROOT / icon.group(1)) as im:
        assert im.format == "PNG" and max(im.size) <= 400, im.size


def test_requirements_never_pin_torch_or_exact_versions():
    reqs = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    names = {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower() for r in reqs}
    assert reqs and not names & {"torch", "torchvision", "torchaudio"} and not any("==" in r for r in reqs)
    deps = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower() for d in PYPROJECT["project"]["dependencies"]}
    assert deps <= names, f"requirements.txt misses {sorted(deps - names)} of pyproject's dependencies"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, name, owner


def test_runtime_code_has_no_eval_exec_or_pip():
    bad = []
    for path in RUNTIME:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, name, owner in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if isinstance(node.func, ast.Name) and name in {"eval", "exec", "compile", "__import__"}:
                bad.append(f"{where} {name}()")
            if owner == "os" and name in {"system", "popen"}:
                bad.append(f"{where} os.{name}()")
            if owner == "subprocess" and "pip" in ast.unparse(node):
                bad.append(f"{where} pip through subprocess")
    for js in sorted((ROOT / "web").rglob("*.js")):
        if re.search(r"\beval\s*\(|new\s+Function\s*\(", js.read_text()):
            bad.append(f"{js.relative_to(ROOT)}: eval / new Function")
    assert not bad, bad


def test_the_scan_finds_what_it_looks_for():
    tree = ast.parse("import os, subprocess\neval('1')\nos.system('ls')\nsubprocess.run(['pip', 'install', 'x'])\nm.eval()")
    found = {(name, owner) for _, name, owner in _calls(tree)}
    assert {("eval", ""), ("system", "os"), ("run", "subprocess"), ("eval", "m")} <= found
