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
    proc = subprocess.run(["pkg-config", *args, "lime"], capture_output=True, text=True, check=False)
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
# Our C shim: bctoolbox (lime's logging library, a dependency of liblime) hands log
# records as printf format + va_list, which Python cannot take; format them here and pass
# the text to the extern "Python+C" sink. bctoolbox ships no headers in Debian's runtime
# package, so its two entry points are declared here (bctoolbox 5.1 logging.h).
C_SOURCE = r"""
#include <stdarg.h>
#include <stdio.h>
#include <lime/lime_ffi.h>

typedef void (*pylime_bctbx_log_func)(const char *domain, int level, const char *fmt,
                                      va_list args);
void bctbx_set_log_handler(pylime_bctbx_log_func func);
void bctbx_set_log_level_mask(const char *domain, int levelmask);

void _pylime_log(const char *domain, int level, const char *message)
    __attribute__((visibility("hidden")));

static void pylime_log_handler(const char *domain, int level, const char *fmt, va_list args)
{
    char text[4096];
    vsnprintf(text, sizeof text, fmt, args);
    _pylime_log(domain ? domain : "", level, text);
}

static void pylime_route_logs(int level_mask)
{
    bctbx_set_log_handler(pylime_log_handler);
    bctbx_set_log_level_mask(NULL, level_mask);
    bctbx_set_log_level_mask("lime", level_mask);
}
"""

ffibuilder.set_source(
    "pylime._lime",
    C_SOURCE,
    include_dirs=_include_dirs,
    library_dirs=_library_dirs,
    libraries=_libraries,
    extra_compile_args=_extra,
    # bctoolbox comes with liblime; Debian ships only its runtime .so.1 (no dev symlink).
    extra_link_args=["-l:libbctoolbox.so.1"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
