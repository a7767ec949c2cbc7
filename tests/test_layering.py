"""Imports flow one way: devices <- kernel <- api <- sdk/cli/apps/ui.
Shared leaf modules (errors, params, types) import no layer at all."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "llmos"
LEAVES = {"errors", "params", "types"}
LAYERS = {
    "devices": 0, "kernel": 1, "api": 2,
    "sdk": 3, "cli": 3, "apps": 3, "ui": 3, "mcp_server": 3, "shell": 3,
}  # fmt: skip
# Front ends may not reach into each other, except over the SDK (and the CLI, which
# launches the MCP server and the natural-language shell).
FRONT_END_ALLOWED = {
    "cli": {"sdk", "mcp_server", "shell"},
    "mcp_server": {"sdk"},
    "shell": {"sdk"},
}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "llmos" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def _owner(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def violations() -> list[str]:
    bad = []
    for path in SRC.rglob("*.py"):
        owner = _owner(path)
        for module in _imports(path):
            target = _unit(module)
            if target is None or target == owner or target in LEAVES:
                continue
            if owner in LEAVES or owner == "__init__":
                if owner == "__init__" and target in LAYERS:
                    continue  # the package root may re-export
                bad.append(f"{path.relative_to(SRC)} imports {module}")
                continue
            if owner not in LAYERS or target not in LAYERS:
                continue
            mine, theirs = LAYERS[owner], LAYERS[target]
            if theirs > mine:
                bad.append(f"{path.relative_to(SRC)} ({owner}) imports upward: {module}")
            elif theirs == mine and target not in FRONT_END_ALLOWED.get(owner, set()):
                bad.append(f"{path.relative_to(SRC)} ({owner}) imports sideways: {module}")
    return bad


def test_imports_flow_one_way() -> None:
    assert violations() == []


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from llmos.api import create_app\nimport llmos.kernel.kernel\n")
    assert _imports(sample) == ["llmos.api", "llmos.kernel.kernel"]
    assert LAYERS["api"] > LAYERS["kernel"] > LAYERS["devices"]


def test_kernel_has_no_http() -> None:
    for path in (SRC / "kernel").rglob("*.py"):
        for module in _imports(path):
            assert not module.startswith(("fastapi", "starlette", "uvicorn", "httpx")), (
                f"{path.name} imports {module}"
            )
