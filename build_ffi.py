"""cffi build script (out-of-line API mode) for ``pylime._lime``.

Compiles a tiny C module against the system liblime found with ``pkg-config lime``.
The declarations come from ``pylime/_lime_cdef.h``, a curated copy we maintain, never the
raw system header.
"""

from __future__ import annotations

import pathlib
import shlex
import shutil
import subprocess
import sys

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
INSTALL_HINT = (
    "pylime needs lime 5.1.x and its C API header (lime/lime_ffi.h).\n"
    "On Debian/Ubuntu: sudo apt-get install liblime-dev libsoci-sqlite3-4.0 pkg-config\n"
    "(or run scripts/setup, which installs them)."
)


def _pkg_config(*args: str) -> list[str]:
    if shutil.which("pkg-config") is None:
        sys.exit("error: pkg-config not found.\n" + INSTALL_HINT)
    proc = subprocess.run(["pkg-config", *args, "lime"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("error: pkg-config cannot find lime (lime.pc).\n" + INSTALL_HINT)
    return shlex.split(proc.stdout)


def _flags() -> tuple[list[str], list[str], list[str], list[str]]:
    version = _pkg_config("--modversion")[0]
    if not version.startswith("5.1."):
        sys.exit(
            f"error: found lime {version}; pylime binds the C API of lime 5.1.x "
            "(lime removed lime_ffi.h in 5.4.0).\n" + INSTALL_HINT
        )
    cflags = _pkg_config("--cflags")
    libs = _pkg_config("--libs")
    include_dirs = [f[2:] for f in cflags if f.startswith("-I")]
    library_dirs = [f[2:] for f in libs if f.startswith("-L")]
    libraries = [f[2:] for f in libs if f.startswith("-l")]
    extra = [f for f in cflags if not f.startswith("-I")]
    return include_dirs, library_dirs, libraries, extra


ffibuilder = FFI()
ffibuilder.cdef((HERE / "pylime" / "_lime_cdef.h").read_text())
_include_dirs, _library_dirs, _libraries, _extra = _flags()
ffibuilder.set_source(
    "pylime._lime",
    "#include <lime/lime_ffi.h>",
    include_dirs=_include_dirs,
    library_dirs=_library_dirs,
    libraries=_libraries,
    extra_compile_args=_extra,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
