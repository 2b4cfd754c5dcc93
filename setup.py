"""Builds minirun's C helpers into the package (minirun/libexec/) as part of build_py,
so that `pip install .` and `pip install -e .` give a complete minirun (see
minirun/shim/build.py for what they are). Everything else is in pyproject.toml."""

from __future__ import annotations

import importlib.util
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _build_helpers(outdir: str) -> None:
    spec = importlib.util.spec_from_file_location("_minirun_build",
                                                  os.path.join(HERE, "minirun/shim/build.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build(outdir)


class BuildPyWithHelpers(build_py):
    def run(self) -> None:
        super().run()
        inplace = getattr(self, "editable_mode", False) or getattr(self, "inplace", False)
        _build_helpers(os.path.join(HERE if inplace else self.build_lib, "minirun", "libexec"))
        if inplace:
            # An editable install runs the checkout's sources: compile them now, or every
            # start recompiles them (PYTHONDONTWRITEBYTECODE, a read-only checkout), which
            # costs ~50 ms a run. A wheel install is compiled by pip itself.
            import compileall

            compileall.compile_dir(os.path.join(HERE, "minirun"), quiet=1)


setup(cmdclass={"build_py": BuildPyWithHelpers})
