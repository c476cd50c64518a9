"""Build and install mbkernels: setuptools for the Python package, CMake + Ninja for mbkernels._C.

    pip install -e .                          # isolated build: pyproject.toml names what it needs
    pip install -e . --no-build-isolation     # the same with this environment's pybind11/cmake/ninja
    MBK_NO_BUILD=1 pip install -e .           # pure Python (reference and Triton backends only)

_C is pybind11 over the torch-free core: the build needs no torch, and one build serves every
torch the package supports. CMake reuses build/py<version>/ between installs, so a rebuild only
compiles what changed.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    """An extension that CMakeLists.txt builds (target `target`); setuptools compiles nothing."""

    def __init__(self, name, target):
        super().__init__(name, sources=[])
        self.target = target


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        # Imported here, not at the top: metadata-only commands do not need it.
        import pybind11

        cmake = shutil.which("cmake")
        if cmake is None:
            raise RuntimeError(
                "mbkernels: building mbkernels._C needs cmake (pip install cmake ninja); "
                "set MBK_NO_BUILD=1 for a pure-Python install"
            )
        out = Path(self.get_ext_fullpath(ext.name)).resolve()
        build_dir = ROOT / "build" / f"py{sys.version_info.major}{sys.version_info.minor}"
        configure = [
            cmake, "-S", str(ROOT), "-B", str(build_dir),
            f"-DCMAKE_BUILD_TYPE={'Debug' if self.debug else 'Release'}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DPython_EXECUTABLE={sys.executable}",
            "-DMBK_WITH_PYTHON=ON",
        ]
        if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
            configure += ["-G", "Ninja"]
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
        build = [cmake, "--build", str(build_dir), "--target", ext.target, "-j", jobs]
        try:
            subprocess.run(configure, check=True)
            subprocess.run(build, check=True)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(
                f"mbkernels: building mbkernels._C failed ({' '.join(e.cmd)} exited with "
                f"{e.returncode}); see the compiler output above, or set MBK_NO_BUILD=1 for a "
                "pure-Python install"
            ) from e
        built = build_dir / out.name  # pybind11 names it with this Python's extension suffix
        if not built.exists():
            raise RuntimeError(f"mbkernels: CMake built {ext.target} but {built} does not exist")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, out)


build_cpp = os.environ.get("MBK_NO_BUILD", "0") != "1"

setup(
    name="mbkernels",
    version="0.1.0",
    description="Fast fused kernels, a drop-in model and a distillation trainer for MobileBERT",
    python_requires=">=3.10",
    packages=find_packages(include=["mbkernels*"]),
    install_requires=["torch>=2.5", "numpy", "safetensors", "tqdm"],
    extras_require={
        "hf": ["transformers"],
        "test": ["pytest", "hypothesis", "transformers", "psutil"],
        "bench": ["pytest-benchmark", "onnx", "onnxscript", "onnxruntime", "matplotlib"],
    },
    entry_points={"console_scripts": ["mbkernels=mbkernels.cli:main"]},
    ext_modules=[CMakeExtension("mbkernels._C", target="_C")] if build_cpp else [],
    cmdclass={"build_ext": CMakeBuild} if build_cpp else {},
    zip_safe=False,
)
