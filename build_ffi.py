"""cffi build script (out-of-line API mode) for ``pylime._lime``, the liblime binding.

The binding is optional: pylime's reference backend, key server, Linphone helpers and CLI are
pure Python. ``setup.py`` asks :func:`cffi_modules` whether to build it; cffi then runs this
file and calls :func:`ffibuilder` only when the answer is yes.

``PYLIME_BUILD_BINDING`` chooses: ``auto`` (default) builds where ``pkg-config lime`` finds
lime 5.1.x and skips the binding otherwise, saying so in one line; ``yes`` makes a missing
lime a build error; ``no`` never builds it (a pure ``py3-none-any`` wheel).

The declarations come from ``pylime/_lime_cdef.h``, a curated copy we maintain, never the
raw system header.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
from typing import NamedTuple

HERE = pathlib.Path(__file__).resolve().parent
PACKAGES = "liblime-dev libsoci-sqlite3-4.0 pkg-config"
INSTALL_HINT = (
    f"for liblime's binding install lime 5.1.x with its C API header (lime/lime_ffi.h): on "
    f"Debian/Ubuntu `sudo apt-get install {PACKAGES}`, then reinstall pylime"
)
_CHOICES = ("auto", "yes", "no")


class Probe(NamedTuple):
    """What the build found: lime's version and flags, or why the binding is not built."""

    version: str = ""
    cflags: tuple[str, ...] = ()
    libs: tuple[str, ...] = ()
    reason: str = ""

    @property
    def found(self) -> bool:
        """True when lime 5.1.x was found and the binding can be built."""
        return not self.reason


def _pkg_config(*args: str) -> str | None:
    proc = subprocess.run(["pkg-config", *args, "lime"], capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def probe() -> Probe:
    """Look for lime 5.1.x with pkg-config."""
    if shutil.which("pkg-config") is None:
        return Probe(reason="pkg-config is not installed")
    version = _pkg_config("--modversion")
    if version is None:
        return Probe(reason="pkg-config finds no lime (lime.pc)")
    if not version.startswith("5.1."):
        return Probe(reason=f"found lime {version}, but pylime binds the C API of lime 5.1.x "
                            "(lime removed lime_ffi.h in 5.4.0)")
    return Probe(version, tuple(shlex.split(_pkg_config("--cflags") or "")),
                 tuple(shlex.split(_pkg_config("--libs") or "")))


def choice() -> str:
    """PYLIME_BUILD_BINDING: auto, yes or no."""
    value = os.environ.get("PYLIME_BUILD_BINDING", "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        sys.exit(f"error: PYLIME_BUILD_BINDING must be one of {', '.join(_CHOICES)}, "
                 f"not {value!r}")
    return value


def cffi_modules() -> list[str]:
    """setup.py's ``cffi_modules``: the binding where it is wanted and lime is found."""
    wanted = choice()
    if wanted == "no":
        print("pylime: PYLIME_BUILD_BINDING=no: building without liblime's binding "
              "(the pure-Python reference backend serves)", file=sys.stderr)
        return []
    found = probe()
    if found.found:
        return ["build_ffi.py:ffibuilder"]
    if wanted == "yes":
        sys.exit(f"error: PYLIME_BUILD_BINDING=yes but {found.reason}; {INSTALL_HINT}")
    print(f"pylime: {found.reason}: building without liblime's binding (the pure-Python "
          f"reference backend serves); {INSTALL_HINT}", file=sys.stderr)
    return []


# Our C shim. bctoolbox (lime's logging library, a dependency of liblime) hands log records
# as printf format + va_list, which Python cannot take: format them here and pass the text
# to the extern "Python+C" sink. bctoolbox ships no headers in Debian's runtime package, so
# its two entry points are declared here (bctoolbox 5.1 logging.h). liblime has no version
# call: the version pkg-config reported is compiled in, and dladdr names the file loaded.
C_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
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

static const char *pylime_lime_version(void)
{
    return PYLIME_LIME_VERSION;
}

static const char *pylime_lime_path(void)
{
    Dl_info info;
    if (dladdr((void *)&lime_ffi_manager_init, &info) && info.dli_fname)
        return info.dli_fname;
    return "";
}
"""


def ffibuilder():  # type: ignore[no-untyped-def]
    """The FFI of pylime._lime; cffi calls it (cffi_modules accepts a function)."""
    from cffi import FFI

    found = probe()
    if not found.found:
        sys.exit(f"error: {found.reason}; {INSTALL_HINT}")
    builder = FFI()
    builder.cdef((HERE / "pylime" / "_lime_cdef.h").read_text())
    builder.set_source(
        "pylime._lime",
        C_SOURCE,
        include_dirs=[f[2:] for f in found.cflags if f.startswith("-I")],
        library_dirs=[f[2:] for f in found.libs if f.startswith("-L")],
        libraries=[f[2:] for f in found.libs if f.startswith("-l")],
        extra_compile_args=[f for f in found.cflags if not f.startswith("-I")],
        define_macros=[("PYLIME_LIME_VERSION", f'"{found.version}"')],
        # bctoolbox comes with liblime; Debian ships only its runtime .so.1 (no dev symlink).
        extra_link_args=["-l:libbctoolbox.so.1"],
    )
    return builder


if __name__ == "__main__":
    ffibuilder().compile(verbose=True)
