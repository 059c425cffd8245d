"""How the package finds libswiftjit.so, and what it says when it cannot."""

import os
import subprocess
import sys


def run(code, **env):
    environment = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)


def test_import_works_without_the_library_and_the_error_says_where_it_looked(tmp_path):
    missing = str(tmp_path / "libswiftjit.so")
    result = run("import swiftjit, caffe, caffe.io, caffe.draw\n"
                 "try:\n    swiftjit.version()\nexcept ImportError as e:\n    print(e)\n",
                 SWIFTJIT_LIBRARY=missing)
    assert result.returncode == 0, result.stderr
    assert missing in result.stdout and "tools/setup.sh" in result.stdout


def test_a_library_without_a_function_names_the_function(tmp_path):
    # libm is a real shared library that has none of our functions.
    result = run("import swiftjit\n"
                 "try:\n    swiftjit.version()\nexcept ImportError as e:\n    print(type(e).__name__, e)\n",
                 SWIFTJIT_LIBRARY="libm.so.6")
    assert "MissingSymbol" in result.stdout and "sj_version" in result.stdout
