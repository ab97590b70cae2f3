"""cffi hooks into setuptools through cffi_modules: the binding only where lime is found."""

import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_ffi import cffi_modules  # build_ffi.py sits beside this file

setup(cffi_modules=cffi_modules())
