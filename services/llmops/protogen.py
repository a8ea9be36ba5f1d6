"""Regenerate ``llmops.v1`` from ``protos/`` (``make proto``). A unit test runs the same
generation into a temporary directory and fails when the committed stubs are stale."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
SERVICES = ROOT / "services"


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "llmops" / "v1").glob("*.proto"))


def generate(out_dir: Path = SERVICES) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    out_dir = Path(out_dir)
    (out_dir / "llmops" / "v1").mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}", *proto_files()]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    init = out_dir / "llmops" / "v1" / "__init__.py"
    init.write_text('"""Generated from protos/llmops/v1 by `make proto`. Do not edit by hand."""\n')


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else SERVICES)
