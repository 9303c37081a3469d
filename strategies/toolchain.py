"""The build tools some cells need at run time, found without importing the
libraries that need them:

- ``torch.compile`` generates code and builds it: Triton compiles a small C
  launcher on CUDA, inductor compiles C++ kernels on CPU. Both need a C/C++
  compiler and the Python headers.
- DeepSpeed's offload optimizer (DeepSpeedCPUAdam) is a C++ op: prebuilt into the
  wheel (``DS_BUILD_CPU_ADAM=1``) or built on first use, which needs ``ninja`` on
  PATH, a C++ compiler and the Python headers (torch's extension builder includes
  ``Python.h``).
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Toolchain:
    c_compiler: str | None
    cxx_compiler: str | None
    python_headers: bool
    ninja: str | None
    deepspeed_prebuilt_ops: frozenset[str]

    @property
    def can_compile(self) -> bool:
        return self.c_compiler is not None and self.python_headers

    @property
    def can_build_cpu_adam(self) -> bool:
        return "cpu_adam" in self.deepspeed_prebuilt_ops or not self.cpu_adam_build_lacks()

    def cpu_adam_build_lacks(self) -> list[str]:
        """What building DeepSpeed's cpu_adam on first use needs and is not here."""
        needs = {"ninja on PATH": self.ninja, "a C++ compiler": self.cxx_compiler,
                 "Python.h (python3-dev)": self.python_headers}
        return [name for name, present in needs.items() if not present]

    @classmethod
    def detect(cls) -> Toolchain:
        include = sysconfig.get_paths().get("include") or ""
        return cls(
            c_compiler=shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"),
            cxx_compiler=shutil.which("c++") or shutil.which("g++") or shutil.which("clang++"),
            python_headers=(Path(include) / "Python.h").is_file(),
            ninja=shutil.which("ninja"),
            deepspeed_prebuilt_ops=deepspeed_prebuilt_ops(),
        )


def deepspeed_prebuilt_ops() -> frozenset[str]:
    """The ops compiled into the installed DeepSpeed, read from the file its build
    writes (importing deepspeed would import torch and probe the accelerator)."""
    spec = importlib.util.find_spec("deepspeed")
    if spec is None or spec.origin is None:
        return frozenset()
    info = Path(spec.origin).parent / "git_version_info_installed.py"
    try:
        for node in ast.parse(info.read_text()).body:
            if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == "installed_ops"):
                ops = ast.literal_eval(node.value)
                return frozenset(name for name, built in ops.items() if built)
    except (OSError, SyntaxError, ValueError):
        pass
    return frozenset()
