"""The package's import graph: no cycle, and no import inside a function except a deliberate deferral of a heavy
optional library (TensorFlow, onnx2tf, LiteRT, ONNX Runtime, qai-hub, the MLflow and W&B loggers), of TensorBoard,
or of a library that is slow to load and needed by few processes (onnx, colour-demosaicing), each with a
``# deferred:`` comment on the line above saying why."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "isp_search"
DEFERRABLE = {"tensorflow", "onnx2tf", "ai_edge_litert", "onnxruntime", "qai_hub", "torch.utils.tensorboard",
              "ray.air.integrations.mlflow", "ray.air.integrations.wandb",  # import mlflow / wandb: tracking only
              # 1-2 s each at import, in every trial worker, node check and driver that imports the module:
              "onnx", "colour_demosaicing"}  # onnx where a model is exported; colour where a RAW is demosaiced


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, local: bool) -> list[ast.stmt]:
    """Import statements at module level (``local=False``) or inside functions (``local=True``)."""
    found: list[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function == local:
                found.append(child)
            visit(child, inner)

    visit(tree, False)
    return found


def _targets(node: ast.stmt, modules: set[str]) -> set[str]:
    """The package modules an import statement loads (a ``from pkg import sub`` names the submodule)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    base = node.module or ""
    out = {base} if base in modules else set()
    out |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
    return out


def test_no_import_cycle():
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: set() for m in files}
    for m, p in files.items():
        for node in _imports(ast.parse(p.read_text()), local=False):
            graph[m] |= _targets(node, set(files)) - {m}
    state: dict[str, int] = {}

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join([*path[path.index(n):], n])
            if n not in state:
                walk(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])


def test_function_level_imports_are_deliberate_deferrals():
    bad = []
    for p in sorted(PACKAGE.rglob("*.py")):
        lines = p.read_text().splitlines()
        for node in _imports(ast.parse("\n".join(lines)), local=True):
            name = node.names[0].name if isinstance(node, ast.Import) else node.module or ""
            heavy = any(name == d or name.startswith(d + ".") for d in DEFERRABLE)
            commented = node.lineno >= 2 and "# deferred:" in lines[node.lineno - 2]
            if not (heavy and commented):
                bad.append(f"{p.relative_to(PACKAGE.parent)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not bad, "imports inside functions:\n" + "\n".join(bad)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import statements under ``if TYPE_CHECKING:`` (read by type checkers, never run)."""
    return {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and getattr(block.test, "id", "") ==
            "TYPE_CHECKING" for stmt in block.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}


def test_heavy_optional_libraries_load_only_where_used():
    """TensorFlow (also through TensorBoard or onnx2tf) at module level would load it in every process that imports
    the module: seconds each, and triton (torchvision's compiler) crashes once TensorFlow is in."""
    bad = []
    for p in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(p.read_text())
        for node in [n for n in _imports(tree, local=False) if id(n) not in _type_checking_only(tree)]:
            name = node.names[0].name if isinstance(node, ast.Import) else node.module or ""
            if any(name == d or name.startswith(d + ".") for d in DEFERRABLE):
                bad.append(f"{p.relative_to(PACKAGE.parent)}:{node.lineno}: {name}")
    assert not bad, bad


def test_no_module_imports_another_modules_private_names():
    bad = []
    for p in sorted(PACKAGE.rglob("*.py")):
        for node in _imports(ast.parse(p.read_text()), local=False) + _imports(ast.parse(p.read_text()), local=True):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("isp_search"):
                bad += [f"{p.relative_to(PACKAGE.parent)}:{node.lineno}: {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.endswith("__")]
    assert not bad, bad
