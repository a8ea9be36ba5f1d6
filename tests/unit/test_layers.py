"""The layers of pyproject.toml's import-linter contracts hold: v1 < common < shared capabilities
(backends, embedding) < the five services, independent of each other < cli; and the benchmarks
never import the tests. A service that imports another service fails here, naming the import."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "services")])}
    r = subprocess.run([str(lint)], cwd=ROOT, env=env,   # it reads the contracts from pyproject.toml
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "2 kept, 0 broken" in r.stdout


def test_no_import_line_names_another_service():
    """The issue's own check, by text: no ``import llmops.<service>`` / ``from llmops.<service>``
    line (lazy ones in functions included) in another service, in common, or in the shared layer."""
    services = ("inference", "retrieval", "tracing", "judging", "drift")
    pkg = ROOT / "services" / "llmops"
    importing = re.compile(r"^\s*(?:from|import)\s+llmops\.(\w+)", re.M)
    offenders = []
    for f in pkg.rglob("*.py"):
        owner = f.relative_to(pkg).parts[0].removesuffix(".py")
        if owner in ("cli", "v1", "protogen"):
            continue
        for target in importing.findall(f.read_text()):
            if target in services and target != owner:
                offenders.append(f"{f.relative_to(ROOT)} imports llmops.{target}")
    assert offenders == []


def test_no_undefined_names_or_unused_imports():
    """pyflakes' checks (ruff ``F``) over the package, the tests and the benchmarks: a name used
    but defined nowhere, or an import left behind by a move, fails here rather than at run time."""
    ruff = Path(sys.executable).with_name("ruff")
    r = subprocess.run([str(ruff), "check", "--select", "F", "--output-format", "concise", "services", "tests", "bench"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
