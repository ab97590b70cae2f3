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
# Operation statuses land in a C record (no trip into Python), and one encryption or
# decryption is one crossing: the message path's per-call chores are done in C.
C_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/vfs.h>
#include <linux/magic.h>
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

typedef struct {
    int done;
    int ok;
    char message[256];
} pylime_status_t;

/* lime's lime_ffi_Callback for every operation: record the status where Python reads it.
 * lime calls twice only when a cipher buffer was too small (a fail, then the real status);
 * pylime sizes them from lime's maximum, so the first status counts. */
static void pylime_status_sink(void *userData, const enum lime_ffi_CallbackReturn status,
                               const char *message)
{
    pylime_status_t *record = userData;
    if (record->done)
        return;
    record->ok = status == lime_ffi_CallbackReturn_success;
    record->message[0] = '\0';
    if (!record->ok && message)  /* lime's message only explains failures */
        snprintf(record->message, sizeof record->message, "%s", message);
    record->done = 1;
}

/* pylime_encrypt's answers beyond lime's own return codes (which are 0 or negative). */
#define PYLIME_ENCRYPTED 1       /* lime returned success and reported success */
#define PYLIME_ENCRYPT_FAILED 2  /* lime returned success and reported a failure */

static int pylime_encrypt(lime_manager_t manager, const char *localDeviceId,
                          const char *recipientUserId, lime_ffi_RecipientData_t *recipients,
                          char **recipientIds, size_t recipientsSize, size_t DRmessageRoom,
                          const uint8_t *plainMessage, size_t plainMessageSize,
                          uint8_t *cipherMessage, size_t *cipherMessageSize,
                          size_t cipherMessageRoom, pylime_status_t *status,
                          enum lime_ffi_EncryptionPolicy encryptionPolicy)
{
    for (size_t i = 0; i < recipientsSize; i++) {
        recipients[i].deviceId = recipientIds[i];
        recipients[i].peerStatus = lime_ffi_PeerDeviceStatus_unknown;
        recipients[i].DRmessageSize = DRmessageRoom;
    }
    *cipherMessageSize = cipherMessageRoom;
    status->done = 0;
    status->ok = 0;
    status->message[0] = '\0';
    int rc = lime_ffi_encrypt(manager, localDeviceId, recipientUserId, recipients,
                              recipientsSize, plainMessage, plainMessageSize, cipherMessage,
                              cipherMessageSize, pylime_status_sink, status, encryptionPolicy);
    if (rc != LIME_FFI_SUCCESS || !status->done)
        return rc;  /* refused, or waiting for the key server */
    return status->ok ? PYLIME_ENCRYPTED : PYLIME_ENCRYPT_FAILED;
}

/* The low-order X key encodings of lime's curves 1 (curve25519) and 2 (curve448), handed
 * over once by pylime.bindings from pylime.keycheck, which owns the list. */
#define PYLIME_LOW_ORDER_MAX 16
static const size_t pylime_x_size[3] = {0, 32, 56};
static uint8_t pylime_low_order_keys[3][PYLIME_LOW_ORDER_MAX][56];
static size_t pylime_low_order_count[3];

static int pylime_set_low_order(int curve, const uint8_t *keys, size_t count)
{
    if (curve < 1 || curve > 2 || count > PYLIME_LOW_ORDER_MAX)
        return -1;
    for (size_t i = 0; i < count; i++)
        memcpy(pylime_low_order_keys[curve][i], keys + i * pylime_x_size[curve],
               pylime_x_size[curve]);
    pylime_low_order_count[curve] = count;
    return 0;
}

/* 1 if a DR message of an established session (no X3DH init: pylime.keycheck checks those,
 * their Ik needs field arithmetic) carries a low-order DHs: header version, type, curve,
 * then Ns and PN (2 bytes each), then DHs. Reads public bytes only. */
static int pylime_dhs_low_order(const uint8_t *message, size_t size)
{
    if (size < 3 || (message[1] & 0x01) || message[2] < 1 || message[2] > 2)
        return 0;
    size_t x = pylime_x_size[message[2]];
    if (size < 7 + x)
        return 0;
    for (size_t i = 0; i < pylime_low_order_count[message[2]]; i++)
        if (memcmp(message + 7, pylime_low_order_keys[message[2]][i], x) == 0)
            return 1;
    return 0;
}

#define PYLIME_LOW_ORDER (-1)

static int pylime_decrypt(lime_manager_t manager,
        const char *localDeviceId, const char *recipientUserId, const char *senderDeviceId,
        const uint8_t *DRmessage, size_t DRmessageSize,
        const uint8_t *cipherMessage, size_t cipherMessageSize,
        uint8_t *plainMessage, size_t plainMessageRoom, size_t *plainMessageSize)
{
    /* liblime 5.1.64 corrupts its heap computing a DH with a low-order key. */
    if (pylime_dhs_low_order(DRmessage, DRmessageSize))
        return PYLIME_LOW_ORDER;
    *plainMessageSize = plainMessageRoom;
    return lime_ffi_decrypt(manager, localDeviceId, recipientUserId, senderDeviceId,
                            DRmessage, DRmessageSize, cipherMessage, cipherMessageSize,
                            plainMessage, plainMessageSize);
}

/* Wipe a buffer that held a plaintext (explicit_bzero: not optimised away). */
static void pylime_wipe(char *buffer, size_t size)
{
    explicit_bzero(buffer, size);
}

/* 1 if the file system holding path keeps its files in memory (tmpfs, ramfs): an fsync
 * there returns at once. 0 otherwise, -1 if statfs fails. */
static int pylime_in_memory_fs(const char *path)
{
    struct statfs fs;
    if (statfs(path, &fs) != 0)
        return -1;
    return fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC;
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
