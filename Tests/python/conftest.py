"""Test setup for the Python package.

By default the tests run against the real libswiftjit.so (found like the package finds it:
$SWIFTJIT_LIBRARY, then the checkout's .build/release). Tests that need a C function the library
does not export fail with swiftjit.MissingSymbol / LibraryNotFound naming it — they are never
skipped.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

def pytest_report_header(config):
    from swiftjit import _capi
    return "swiftjit backend: libswiftjit.so from " + ", ".join(
        "%s=%s" % (d, p) for d, p in _capi.candidate_paths())


@pytest.fixture
def write(tmp_path):
    """write(name, text) -> path of a file with that text in the test's temporary folder."""
    def write_file(name, text):
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write_file
